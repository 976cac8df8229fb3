//! What the SQLite and PostgreSQL backends share: one set of `table!` definitions (the column
//! types used — `Text`, `BigInt`, `Integer`, `Bool` — map to both databases, so each backend's
//! migrations create the same tables in its own SQL), the row types and the error mapping.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::{TxPhase, TxRecord};
use crate::auth::TokenRecord;
use crate::error::ServerError;

#[allow(missing_docs)]
pub(super) mod schema {
    diesel::table! {
        dps (resource_id) {
            resource_id -> Text,
            record -> Text,
            created_at -> BigInt,
        }
    }
    diesel::table! {
        sps (client_id) {
            client_id -> Text,
            record -> Text,
            created_at -> BigInt,
        }
    }
    diesel::table! {
        tokens (token_hash) {
            token_hash -> Text,
            tx_id -> Text,
            client_id -> Text,
            resource_id -> Text,
            transaction_uid -> Text,
            scope -> Text,
            sub -> Text,
            uid -> Text,
            claims -> Text,
            iat -> BigInt,
            exp -> BigInt,
        }
    }
    diesel::table! {
        transactions (id) {
            id -> Text,
            client_id -> Text,
            tx_id -> Text,
            state -> Text,
            code -> Nullable<Integer>,
            resources -> Text,
            return_query -> Nullable<Text>,
            case_number -> Nullable<Text>,
            pid_sealed -> Nullable<Text>,
            citizen_sealed -> Nullable<Text>,
            identity_method -> Nullable<Text>,
            ticket_hash -> Nullable<Text>,
            secret_key_sealed -> Nullable<Text>,
            sp_api_ack -> Bool,
            datasets -> Text,
            package_path -> Nullable<Text>,
            created_at -> BigInt,
            consent_at -> Nullable<BigInt>,
            taken_at -> Nullable<BigInt>,
            purge_at -> BigInt,
            return_url -> Nullable<Text>,
            last_activity -> BigInt,
        }
    }
    diesel::table! {
        transfers (id) {
            id -> Integer,
            at -> BigInt,
            kind -> Text,
            client_id -> Text,
            resource_id -> Nullable<Text>,
            subject_hash -> Text,
            code -> Integer,
            case_number -> Nullable<Text>,
            identity_method -> Nullable<Text>,
        }
    }
}
use schema::{tokens, transactions, transfers};

// `treat_none_as_default_value = false`: `None` is bound as NULL, so an INSERT has one SQL text
// whatever the values and diesel's statement cache reuses it (otherwise each pattern of absent
// columns is its own statement, prepared anew: 2 % of server CPU in the flow_load bench).
#[derive(Queryable, Insertable, Selectable, AsChangeset)]
#[diesel(
    table_name = transactions,
    treat_none_as_null = true,
    treat_none_as_default_value = false
)]
pub(super) struct TxRow {
    pub(super) id: String,
    pub(super) client_id: String,
    pub(super) tx_id: String,
    pub(super) state: TxPhase,
    pub(super) code: Option<i32>,
    pub(super) resources: String,
    pub(super) return_query: Option<String>,
    pub(super) case_number: Option<String>,
    pub(super) pid_sealed: Option<String>,
    pub(super) citizen_sealed: Option<String>,
    pub(super) identity_method: Option<String>,
    pub(super) ticket_hash: Option<String>,
    pub(super) secret_key_sealed: Option<String>,
    pub(super) sp_api_ack: bool,
    pub(super) datasets: String,
    pub(super) package_path: Option<String>,
    pub(super) created_at: i64,
    pub(super) consent_at: Option<i64>,
    pub(super) taken_at: Option<i64>,
    pub(super) purge_at: i64,
    pub(super) return_url: Option<String>,
    pub(super) last_activity: i64,
}

macro_rules! tx_convert {
    ($from:ty, $to:ident) => {
        impl From<$from> for $to {
            fn from(t: $from) -> Self {
                $to {
                    id: t.id,
                    client_id: t.client_id,
                    tx_id: t.tx_id,
                    state: t.state,
                    code: t.code,
                    resources: t.resources,
                    return_query: t.return_query,
                    case_number: t.case_number,
                    pid_sealed: t.pid_sealed,
                    citizen_sealed: t.citizen_sealed,
                    identity_method: t.identity_method,
                    ticket_hash: t.ticket_hash,
                    secret_key_sealed: t.secret_key_sealed,
                    sp_api_ack: t.sp_api_ack,
                    datasets: t.datasets,
                    package_path: t.package_path,
                    created_at: t.created_at,
                    consent_at: t.consent_at,
                    taken_at: t.taken_at,
                    purge_at: t.purge_at,
                    return_url: t.return_url,
                    last_activity: t.last_activity,
                }
            }
        }
    };
}
tx_convert!(TxRecord, TxRow);
tx_convert!(TxRow, TxRecord);

/// The columns [`Store::update_tx`](super::Store::update_tx) writes: every column but the
/// transaction's identity (`id`, `client_id`, `tx_id`, `resources`, `created_at`), which is
/// fixed when the row is inserted. Leaving them out of the `SET` list spares the database
/// rewriting the `(client_id, tx_id)` unique index on every step of a flow; borrowing spares
/// copying the record.
#[derive(AsChangeset)]
#[diesel(table_name = transactions, treat_none_as_null = true)]
pub(super) struct TxChange<'a> {
    pub(super) state: TxPhase,
    pub(super) code: Option<i32>,
    pub(super) return_query: Option<&'a str>,
    pub(super) case_number: Option<&'a str>,
    pub(super) pid_sealed: Option<&'a str>,
    pub(super) citizen_sealed: Option<&'a str>,
    pub(super) identity_method: Option<&'a str>,
    pub(super) ticket_hash: Option<&'a str>,
    pub(super) secret_key_sealed: Option<&'a str>,
    pub(super) sp_api_ack: bool,
    pub(super) datasets: &'a str,
    pub(super) package_path: Option<&'a str>,
    pub(super) consent_at: Option<i64>,
    pub(super) taken_at: Option<i64>,
    pub(super) purge_at: i64,
    pub(super) return_url: Option<&'a str>,
    pub(super) last_activity: i64,
}

impl<'a> From<&'a TxRecord> for TxChange<'a> {
    fn from(t: &'a TxRecord) -> Self {
        TxChange {
            state: t.state,
            code: t.code,
            return_query: t.return_query.as_deref(),
            case_number: t.case_number.as_deref(),
            pid_sealed: t.pid_sealed.as_deref(),
            citizen_sealed: t.citizen_sealed.as_deref(),
            identity_method: t.identity_method.as_deref(),
            ticket_hash: t.ticket_hash.as_deref(),
            secret_key_sealed: t.secret_key_sealed.as_deref(),
            sp_api_ack: t.sp_api_ack,
            datasets: &t.datasets,
            package_path: t.package_path.as_deref(),
            consent_at: t.consent_at,
            taken_at: t.taken_at,
            purge_at: t.purge_at,
            return_url: t.return_url.as_deref(),
            last_activity: t.last_activity,
        }
    }
}

#[derive(Queryable, Insertable, Selectable)]
#[diesel(table_name = transfers, treat_none_as_default_value = false)]
pub(super) struct TransferRow {
    pub(super) at: i64,
    pub(super) kind: String,
    pub(super) client_id: String,
    pub(super) resource_id: Option<String>,
    pub(super) subject_hash: String,
    pub(super) code: i32,
    pub(super) case_number: Option<String>,
    pub(super) identity_method: Option<String>,
}

impl From<&super::TransferRecord> for TransferRow {
    fn from(t: &super::TransferRecord) -> Self {
        TransferRow {
            at: t.at,
            kind: t.kind.clone(),
            client_id: t.client_id.clone(),
            resource_id: t.resource_id.clone(),
            subject_hash: t.subject_hash.clone(),
            code: t.code,
            case_number: t.case_number.clone(),
            identity_method: t.identity_method.clone(),
        }
    }
}

#[derive(Queryable, Insertable, Selectable)]
#[diesel(table_name = tokens)]
pub(super) struct TokenRow {
    pub(super) token_hash: String,
    pub(super) tx_id: String,
    pub(super) client_id: String,
    pub(super) resource_id: String,
    pub(super) transaction_uid: String,
    pub(super) scope: String,
    pub(super) sub: String,
    pub(super) uid: String,
    pub(super) claims: String,
    pub(super) iat: i64,
    pub(super) exp: i64,
}

impl From<&TokenRecord> for TokenRow {
    fn from(t: &TokenRecord) -> Self {
        TokenRow {
            token_hash: t.token_hash.clone(),
            tx_id: t.tx_id.clone(),
            client_id: t.client_id.clone(),
            resource_id: t.resource_id.clone(),
            transaction_uid: t.transaction_uid.clone(),
            scope: t.scope.clone(),
            sub: t.sub.clone(),
            uid: t.uid.clone(),
            claims: t.claims.clone(),
            iat: t.iat,
            exp: t.exp,
        }
    }
}

impl From<TokenRow> for TokenRecord {
    fn from(t: TokenRow) -> Self {
        TokenRecord {
            token_hash: t.token_hash,
            tx_id: t.tx_id,
            client_id: t.client_id,
            resource_id: t.resource_id,
            transaction_uid: t.transaction_uid,
            scope: t.scope,
            sub: t.sub,
            uid: t.uid,
            claims: t.claims,
            iat: t.iat,
            exp: t.exp,
        }
    }
}

// The stored state is its text ([`TxPhase::as_str`]) in both databases; a text no version of
// the platform writes is a storage error when read, not a state.
impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for TxPhase
where
    DB: diesel::backend::Backend,
    str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
{
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, DB>,
    ) -> diesel::serialize::Result {
        self.as_str().to_sql(out)
    }
}

impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for TxPhase
where
    DB: diesel::backend::Backend,
    String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
        let text = String::from_sql(bytes)?;
        TxPhase::from_stored(&text)
            .ok_or_else(|| format!("unknown transaction state {text:?}").into())
    }
}

/// Whether every migration of `migrations` is applied on `conn` (the readiness check of both
/// backends, [`Store::ready`](super::Store::ready)).
pub(super) fn migrations_applied<DB: diesel::backend::Backend>(
    conn: &mut impl diesel_migrations::MigrationHarness<DB>,
    migrations: diesel_migrations::EmbeddedMigrations,
) -> crate::error::ServerResult<()> {
    let pending = conn
        .has_pending_migration(migrations)
        .map_err(|e| ServerError::Storage(format!("migrations: {e}")))?;
    if pending {
        return Err(ServerError::Storage("migrations pending".into()));
    }
    Ok(())
}

pub(super) fn db(e: DieselError) -> ServerError {
    ServerError::Storage(e.to_string())
}

pub(super) fn json_err(e: serde_json::Error) -> ServerError {
    ServerError::Storage(format!("stored record: {e}"))
}

pub(super) fn is_unique(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}
