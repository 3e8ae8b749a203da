//! `scimrelay-scim`: the SCIM 2.0 client every connector uses to talk to a provider.
//!
//! - [`ScimClient::execute`] sends one [`ScimRequest`] and maps the answer to a
//!   [`ScimResponse`] or a [`ScimError`] whose body was parsed from whatever shape the provider
//!   sent ([`parse_error_body`]); typed helpers ([`ScimClient::create_user`],
//!   [`ScimClient::list_all`], [`ScimClient::discover`], …) are built on it.
//! - [`Auth`]: Basic, static bearer, OAuth 2.0 client credentials and JWT bearer, with token
//!   caching, renewal before expiry and once on 401, one token request in flight per client.
//! - Typed resources ([`User`], [`Group`], [`ListResponse`], [`ServiceProviderConfig`]) that keep
//!   unknown members for round trips.
//! - [`PatchBuilder`] and [`Filter`] / [`filter_eq`] for request bodies and correctly escaped
//!   filters.
//!
//! The client is deliberately policy-free: no retries (except the single OAuth renewal), no
//! rate limiting, no provider quirks. Those live in the connector runtime and the provider
//! crates, which wrap `execute`.

pub mod auth;
pub mod client;
pub mod encoding;
pub mod error;
pub mod filter;
pub mod patch;
pub mod request;
pub mod resources;
pub mod secret;
pub mod typed;

#[cfg(test)]
mod test_support;

pub use auth::Auth;
pub use client::{ClientConfig, DEFAULT_CONTENT_TYPE, DEFAULT_TIMEOUT_SECS, ScimClient};
pub use encoding::path_segment;
pub use error::{ScimError, parse_error_body, parse_retry_after};
pub use filter::{CompareOp, Filter, FilterValue, escape_value, filter_eq, value_path};
pub use patch::{PATCH_OP_SCHEMA, PatchBuilder, PatchOpKind, PatchOperation, member_values};
pub use request::{ScimRequest, ScimResponse};
pub use resources::{
    BulkSupport, ENTERPRISE_USER_SCHEMA, EnterpriseUser, FilterSupport, GROUP_SCHEMA, Group,
    ListResponse, Manager, Member, Meta, MultiValued, Name, Resource, ServiceProviderConfig,
    Supported, USER_SCHEMA, User,
};
pub use secret::Secret;
pub use typed::{ListQuery, Paging, Versioned};
