//! Server-side TLS contexts (see the [module documentation](super)).
