//! Translations between provider APIs: `convert::<backend>` turns a client's request into the
//! backend's and the backend's answers (JSON, streams, errors) back into the client's dialect.
//! Pure functions and sans-I/O stream translators; the provider-rewrite stage drives them.

pub mod anthropic;
