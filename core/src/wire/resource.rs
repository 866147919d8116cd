//! Google resources that belong to the key that created them (files,
//! uploads, cached contents, batches, operations, interactions, file search
//! stores), named as they travel between the request side and the key
//! store.

use crate::wire::time::HOUR_MS;
/// The kinds of resource a key owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `files/{id}`.
    File,
    /// `uploads/{upload_id}`: a resumable upload in progress.
    Upload,
    /// `cachedContents/{id}`.
    CachedContent,
    /// `batches/{id}`.
    Batch,
    /// `operations/{id}` or `models/{model}/operations/{id}` (Veo), or an
    /// operation of a file search store.
    Operation,
    /// `interactions/{id}`.
    Interaction,
    /// `fileSearchStores/{id}`.
    FileSearchStore,
    /// `liveSessions/{hash}`: a Live session's resumption handle (by its
    /// hash, [`Resource::live_handle`]); Google keeps one valid 2 hours.
    LiveSession,
    /// `authTokens/{hash}`: an ephemeral token a key minted (by its hash,
    /// [`Resource::auth_token`]), which opens a constrained Live session.
    AuthToken,
}

impl Kind {
    /// How long an entry of this kind is remembered when its answer gives
    /// no expiry: files 48 hours (Google's own); uploads a week; the kinds
    /// Google keeps longer (file search stores until deleted; batches,
    /// operations and interactions for weeks) 30 days, renewed while they
    /// are used: a client reaches only what the registry remembers as its.
    pub fn default_ttl_ms(self) -> u64 {
        match self {
            Kind::File | Kind::CachedContent => 48 * HOUR_MS,
            Kind::Upload => 7 * 24 * HOUR_MS,
            Kind::Batch | Kind::Operation | Kind::Interaction | Kind::FileSearchStore => 30 * 24 * HOUR_MS,
            Kind::LiveSession => 2 * HOUR_MS,
            // Google's longest (its default is 30 minutes); the answer's
            // `expireTime` is used when given.
            Kind::AuthToken => 20 * HOUR_MS,
        }
    }
}

/// A resource's canonical name (`files/abc`, `models/veo-3/operations/x`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    pub(crate) name: String,
    pub(crate) kind: Kind,
}

/// The longest resource name taken.
const MAX_NAME_LEN: usize = 256;

/// The collections whose members are resources, and their kinds.
const COLLECTIONS: &[(&str, Kind)] = &[
    ("files", Kind::File),
    ("cachedContents", Kind::CachedContent),
    ("batches", Kind::Batch),
    ("operations", Kind::Operation),
    ("interactions", Kind::Interaction),
    ("fileSearchStores", Kind::FileSearchStore),
];

pub(crate) fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Resource {
    /// The resource a name or URI refers to: `files/abc`, `models/x/operations/y`,
    /// or a full URI such as
    /// `https://generativelanguage.googleapis.com/v1beta/files/abc`; `None`
    /// for anything else. A trailing `:action` is dropped.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() > MAX_NAME_LEN {
            return None;
        }
        let mut rest = raw;
        if let Some((scheme, after)) = rest.split_once("://") {
            let (host, path) = after.split_once('/')?;
            // Only Google's API names its resources in a URI; any other
            // URL (a page for url_context, say) is no resource of a key.
            if scheme != "https" || host != GOOGLE_API_HOST {
                return None;
            }
            rest = path;
        }
        let rest = rest.trim_start_matches('/');
        let rest = ["v1beta/", "v1/", "v1alpha/"].iter().find_map(|v| rest.strip_prefix(v)).unwrap_or(rest);
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let segments: Vec<&str> = rest.split('/').collect();
        let strip_action = |s: &str| s.split_once(':').map_or(s, |(id, _)| id).to_owned();
        match segments.as_slice() {
            ["models", model, "operations", op, ..] if is_id(model) && is_id(&strip_action(op)) => {
                Some(Self { name: format!("models/{model}/operations/{}", strip_action(op)), kind: Kind::Operation })
            }
            ["fileSearchStores", store, "operations", op, ..] if is_id(store) && is_id(&strip_action(op)) => {
                Some(Self {
                    name: format!("fileSearchStores/{store}/operations/{}", strip_action(op)),
                    kind: Kind::Operation,
                })
            }
            [collection, id, ..] => {
                let id = strip_action(id);
                let (c, kind) = COLLECTIONS.iter().find(|(c, _)| c == collection)?;
                is_id(&id).then(|| Self { name: format!("{c}/{id}"), kind: *kind })
            }
            _ => None,
        }
    }

    /// A name as [`Self::name`] gives it: a resource's, or an upload's
    /// (`uploads/{id}`).
    pub fn stored(name: &str) -> Option<Self> {
        Self::parse(name).or_else(|| name.strip_prefix("uploads/").and_then(Self::upload)).or_else(|| {
            let hashed = |prefix: &str, kind| {
                let hash = name.strip_prefix(prefix)?;
                (hash.len() == HASH_LEN && hash.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| Self { name: name.to_owned(), kind })
            };
            hashed("liveSessions/", Kind::LiveSession).or_else(|| hashed("authTokens/", Kind::AuthToken))
        })
    }

    /// The resource of a Live session's resumption handle. The handle is a
    /// credential of sorts (it resumes the conversation): only its hash is
    /// kept.
    pub fn live_handle(handle: &str) -> Self {
        Self { name: format!("liveSessions/{}", short_hash(b"live handle\0", handle)), kind: Kind::LiveSession }
    }

    /// The resource of an ephemeral token (`auth_tokens/…`, as Google names
    /// it and clients present it): only its hash is kept.
    pub fn auth_token(token: &str) -> Self {
        Self { name: format!("authTokens/{}", short_hash(b"auth token\0", token)), kind: Kind::AuthToken }
    }

    /// The resource of a resumable upload in progress, by its upload id.
    pub fn upload(upload_id: &str) -> Option<Self> {
        let ok = !upload_id.is_empty()
            && upload_id.len() <= MAX_NAME_LEN
            && upload_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
        ok.then(|| Self { name: format!("uploads/{upload_id}"), kind: Kind::Upload })
    }

    /// Its canonical name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

/// How many hex digits of a hash name a handle's or a token's resource.
const HASH_LEN: usize = 32;

/// The first [`HASH_LEN`] hex digits of SHA-256 over `domain` and `value`.
fn short_hash(domain: &[u8], value: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(domain);
    h.update(value.as_bytes());
    h.finalize().iter().take(HASH_LEN / 2).map(|b| format!("{b:02x}")).collect()
}

/// The host of the URIs Google gives its resources
/// (`https://generativelanguage.googleapis.com/v1beta/files/abc`).
pub const GOOGLE_API_HOST: &str = "generativelanguage.googleapis.com";
