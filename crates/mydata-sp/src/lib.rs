//! SP SDK for the MyData online service (work in progress).
