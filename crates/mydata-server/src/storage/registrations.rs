//! The query code of the registration lifecycle methods of [`Store`](super::Store)
//! ([`Store::delete_sp`](super::Store::delete_sp), [`Store::delete_dp`](super::Store::delete_dp)),
//! written once for both backends and expanded inside [`store_impl!`](super::queries) (same
//! names in scope: diesel's prelude, the `sps` and `dps` tables, `db`, `ServerError`).
//! Suspending and rotating are [`Store::update_sp`](super::Store::update_sp) and
//! [`Store::update_dp`](super::Store::update_dp) of a changed record.

/// The methods, for a backend whose write connection comes from `self.$write()`.
macro_rules! registration_queries {
    ($write:ident) => {
        fn delete_dp(&self, resource_id: &str) -> ServerResult<()> {
            let n = diesel::delete(dps::table.find(resource_id))
                .execute(&mut *self.$write()?)
                .map_err(db)?;
            if n == 0 {
                return Err(ServerError::NotFound(format!("dataset {resource_id}")));
            }
            Ok(())
        }

        fn delete_sp(&self, client_id: &str) -> ServerResult<()> {
            let n = diesel::delete(sps::table.find(client_id))
                .execute(&mut *self.$write()?)
                .map_err(db)?;
            if n == 0 {
                return Err(ServerError::NotFound(format!("service {client_id}")));
            }
            Ok(())
        }
    };
}

pub(super) use registration_queries;
