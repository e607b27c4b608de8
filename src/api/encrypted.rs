//! Encryption at rest: [`EncryptedSession`] wraps any [`Session`] and stores each item as the
//! Agents SDK's `EncryptedSession` (openai-agents 0.24, `agents.extensions.memory`) does, so
//! either side reads what the other wrote. This module owns the key handling ([`EncryptionKey`]:
//! the master key, never printed, zeroed on drop; the per-session key derived by HKDF), the
//! Fernet tokens (composed from the RustCrypto primitives: AES-128-CBC, HMAC-SHA256), the
//! envelope `{"__enc__": 1, "v": 1, "kid": "hkdf-v1", "payload": TOKEN}` and the SDK's read
//! rules: expired or unreadable items are hidden and stay stored, a positive limit counts
//! readable items, `pop_item` skips what it cannot read.
//!
//! The rules, and where they differ from the SDK, are stated on [`EncryptedSession`].

use std::any::Any;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes::cipher::{block_padding::Pkcs7, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

use agent_sessions_model::{nesting_depth, parse_item, Item, MAX_DEPTH};

use super::session::{BasicSession, Session};
use super::store::SessionSettings;
use crate::error::{Error, Result};
use crate::protocol::handle::BoxFuture;
use crate::protocol::sync::Arc;

/// The envelope's key id and version, as the SDK writes them.
const KID: &str = "hkdf-v1";
const VERSION: u64 = 1;
/// HKDF `info` of the per-session key derivation.
const HKDF_INFO: &[u8] = b"agents.session-store.hkdf.v1";
/// Fernet's tolerance for tokens from the future, in seconds.
const MAX_CLOCK_SKEW: u64 = 60;
/// The SDK's default TTL.
const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// Fernet's version byte.
const FERNET_VERSION: u8 = 0x80;
/// Bytes of a token: version, timestamp, IV … HMAC.
const HEADER: usize = 1 + 8 + 16;
const TAG: usize = 32;

// ---------------------------------------------------------------------------------------------
// Keys

/// A master key for [`EncryptedSession`]: the SDK's `encryption_key`.
///
/// A string that decodes as url-safe base64 to exactly 32 bytes (what Python's
/// `Fernet.generate_key()` and [`EncryptionKey::generate_master_key`] produce) is used as those
/// 32 bytes; any other non-empty string is used as its UTF-8 bytes (accepted for compatibility;
/// a password is no good key: HKDF does not harden it). The bytes are zeroed when the key is
/// dropped, and neither `Debug` nor any error of this crate prints them.
///
/// ```
/// use agent_sessions::EncryptionKey;
///
/// let key = EncryptionKey::new("a high-entropy secret from the secret manager")?;
/// assert_eq!(format!("{key:?}"), "EncryptionKey(***)");
/// assert!(EncryptionKey::new("").is_err());
/// # Ok::<(), agent_sessions::Error>(())
/// ```
#[derive(Clone)]
pub struct EncryptionKey(Zeroizing<Vec<u8>>);

impl EncryptionKey {
    /// The key for `master_key`; [`Error::InvalidArgument`] if it is empty.
    ///
    /// ```
    /// use agent_sessions::EncryptionKey;
    /// // Python: Fernet.generate_key().decode() — 32 random bytes, url-safe base64.
    /// let key = EncryptionKey::new("tGq3_UgqBfDx1bD2mAq9vTZsWb4u-SC0rT6zyS4oGrU=")?;
    /// # drop(key);
    /// # Ok::<(), agent_sessions::Error>(())
    /// ```
    pub fn new(master_key: &str) -> Result<EncryptionKey> {
        if master_key.is_empty() {
            return Err(Error::InvalidArgument(
                "the encryption key is empty; EncryptedSession needs one".into(),
            ));
        }
        let bytes = match python_urlsafe_b64decode(master_key) {
            Some(decoded) if decoded.len() == 32 => decoded,
            _ => Zeroizing::new(master_key.as_bytes().to_vec()),
        };
        Ok(EncryptionKey(bytes))
    }

    /// A new random master key in the format of Python's `Fernet.generate_key()` (32 bytes from
    /// the operating system's generator, url-safe base64 with padding). Keep it secret: pass it
    /// to [`EncryptionKey::new`] now and after every restart.
    ///
    /// ```
    /// use agent_sessions::EncryptionKey;
    /// let secret = EncryptionKey::generate_master_key()?;
    /// assert_eq!(secret.len(), 44);
    /// let key = EncryptionKey::new(&secret)?;
    /// # drop(key);
    /// # Ok::<(), agent_sessions::Error>(())
    /// ```
    pub fn generate_master_key() -> Result<String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        random(&mut bytes[..])?;
        Ok(base64::engine::general_purpose::URL_SAFE.encode(&bytes[..]))
    }

    /// The per-session Fernet key: HKDF-SHA256 over the master key, salted with the session id.
    fn derive(&self, session_id: &str) -> FernetKey {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(session_id.as_bytes()), &self.0);
        let mut okm = Zeroizing::new([0u8; 32]);
        hkdf.expand(HKDF_INFO, &mut okm[..])
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        FernetKey(okm)
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(***)")
    }
}

/// Python's `base64.urlsafe_b64decode(s)` on a `str`: `None` where Python raises. Non-ASCII
/// input is refused; `-`/`+` and `_`/`/` both decode; any other character outside the alphabet
/// is skipped; a complete padding ends the input (whatever follows is ignored); `=` where no
/// padding can start is skipped; a last group of one character is an error, and so is a last
/// group of two or three without its padding.
fn python_urlsafe_b64decode(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    if !s.is_ascii() {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() / 4 * 3 + 3));
    let (mut quad_pos, mut left, mut pads) = (0u8, 0u32, 0u8);
    for &c in s.as_bytes() {
        if c == b'=' {
            if quad_pos >= 2 {
                pads += 1;
                if quad_pos + pads >= 4 {
                    return Some(out);
                }
            }
            continue;
        }
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => continue,
        };
        let v = u32::from(v);
        pads = 0;
        match quad_pos {
            0 => {
                left = v;
                quad_pos = 1;
            }
            1 => {
                out.push(((left << 2) | (v >> 4)) as u8);
                left = v & 0x0f;
                quad_pos = 2;
            }
            2 => {
                out.push(((left << 4) | (v >> 2)) as u8);
                left = v & 0x03;
                quad_pos = 3;
            }
            _ => {
                out.push(((left << 6) | v) as u8);
                quad_pos = 0;
            }
        }
    }
    (quad_pos == 0).then_some(out)
}

fn random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| {
        Error::Io(format!(
            "the operating system's random generator failed: {e}"
        ))
    })
}

/// A session's Fernet key: signing key (first 16 bytes), AES-128 key (last 16). Zeroed on drop.
#[derive(Clone)]
struct FernetKey(Zeroizing<[u8; 32]>);

impl FernetKey {
    fn signing(&self) -> &[u8] {
        &self.0[..16]
    }

    fn encryption(&self) -> &[u8] {
        &self.0[16..]
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(self.signing())
            .expect("HMAC takes a key of any length")
    }

    /// A Fernet token for `plaintext` stamped `now` (seconds since the epoch).
    fn encrypt(&self, plaintext: &[u8], now: u64) -> Result<String> {
        let mut iv = [0u8; 16];
        random(&mut iv)?;
        self.encrypt_with_iv(plaintext, now, &iv)
    }

    /// [`FernetKey::encrypt`] with a chosen IV (cryptography's `_encrypt_from_parts`): what the
    /// known-answer tests compare byte for byte.
    fn encrypt_with_iv(&self, plaintext: &[u8], now: u64, iv: &[u8; 16]) -> Result<String> {
        let ciphertext = cbc::Encryptor::<aes::Aes128>::new_from_slices(self.encryption(), iv)
            .map_err(|_| Error::Internal("AES-128 key or IV of the wrong length".into()))?
            .encrypt_padded_vec::<Pkcs7>(plaintext);
        let mut token = Vec::with_capacity(HEADER + ciphertext.len() + TAG);
        token.push(FERNET_VERSION);
        token.extend_from_slice(&now.to_be_bytes());
        token.extend_from_slice(iv);
        token.extend_from_slice(&ciphertext);
        let mut mac = self.mac();
        mac.update(&token);
        token.extend_from_slice(&mac.finalize().into_bytes());
        Ok(base64::engine::general_purpose::URL_SAFE.encode(token))
    }

    /// The token's bytes and timestamp if its HMAC is right (Python's `extract_timestamp`:
    /// no TTL, no clock).
    fn authenticate(&self, token: &str) -> Option<(Zeroizing<Vec<u8>>, u64)> {
        let (data, timestamp) = unverified(token)?;
        self.verify(&data).then_some((data, timestamp))
    }

    fn verify(&self, data: &[u8]) -> bool {
        let Some(split) = data.len().checked_sub(TAG) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(&data[..split]);
        mac.verify_slice(&data[split..]).is_ok()
    }

    /// The plaintext of `token` (Python's `decrypt(token, ttl)` at time `now`): `None` if it is
    /// malformed, expired (`timestamp + ttl < now`), from more than 60 s in the future, or does
    /// not authenticate. Without a TTL neither time check applies, as in Python.
    fn decrypt(&self, token: &str, ttl: Option<u64>, now: u64) -> Option<Vec<u8>> {
        let (data, timestamp) = unverified(token)?;
        if let Some(ttl) = ttl {
            if timestamp.saturating_add(ttl) < now || now.saturating_add(MAX_CLOCK_SKEW) < timestamp
            {
                return None;
            }
        }
        if !self.verify(&data) || data.len() < HEADER + TAG {
            return None;
        }
        let iv = &data[9..HEADER];
        let ciphertext = &data[HEADER..data.len() - TAG];
        cbc::Decryptor::<aes::Aes128>::new_from_slices(self.encryption(), iv)
            .ok()?
            .decrypt_padded_vec::<Pkcs7>(ciphertext)
            .ok()
    }
}

/// Python's `Fernet._get_unverified_token_data`: the decoded token and its timestamp.
fn unverified(token: &str) -> Option<(Zeroizing<Vec<u8>>, u64)> {
    let data = python_urlsafe_b64decode(token)?;
    if data.len() < 9 || data[0] != FERNET_VERSION {
        return None;
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&data[1..9]);
    Some((data, u64::from_be_bytes(ts)))
}

// ---------------------------------------------------------------------------------------------
// Options

type ClockFn = Arc<Box<dyn Fn() -> SystemTime + Send + Sync>>;

/// Options of an [`EncryptedSession`]: the TTL, the read budget, the default limit and the
/// clock.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use agent_sessions::{EncryptionOptions, SessionSettings};
///
/// let options = EncryptionOptions::new()
///     .ttl(Some(Duration::from_secs(3600)))     // the SDK's `ttl=3600`
///     .max_scan_items(Some(10_000))             // the SDK's `max_scan_items=10_000`
///     .settings(SessionSettings::with_limit(Some(50)))
///     .clock(SystemTime::now);
/// assert_eq!(options.ttl_value(), Some(Duration::from_secs(3600)));
/// ```
#[derive(Clone)]
pub struct EncryptionOptions {
    ttl: Option<Duration>,
    max_scan_items: Option<u64>,
    settings: SessionSettings,
    clock: Option<ClockFn>,
    pop_rule: PopRule,
}

/// What [`EncryptedSession::pop_item`] does when the newest item is an envelope its key cannot
/// authenticate (another key's, or a damaged token).
///
/// ```
/// use agent_sessions::{EncryptionOptions, PopRule};
/// // A `Box<dyn Session>` hides its type: say which rule applies.
/// let options = EncryptionOptions::new().pop_rule(PopRule::KeepUnauthenticated);
/// assert_eq!(PopRule::default(), PopRule::BySessionType);
/// # drop(options);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PopRule {
    /// The SDK's rule for the wrapped type: [`KeepUnauthenticated`](PopRule::KeepUnauthenticated)
    /// over a [`BasicSession`] (`EncryptedSession<BasicSession>`),
    /// [`SkipUnauthenticated`](PopRule::SkipUnauthenticated) over any other type — including a
    /// `Box<dyn Session>`, whose type is not visible.
    #[default]
    BySessionType,
    /// Stop: the pop fails with [`Error::InvalidArgument`] and the envelope stays stored (the
    /// SDK's rule over `SQLiteSession`).
    KeepUnauthenticated,
    /// Remove it and go on to the next item (the SDK's rule over other backends).
    SkipUnauthenticated,
}

impl Default for EncryptionOptions {
    fn default() -> Self {
        EncryptionOptions::new()
    }
}

impl fmt::Debug for EncryptionOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionOptions")
            .field("ttl", &self.ttl)
            .field("max_scan_items", &self.max_scan_items)
            .field("settings", &self.settings)
            .field("pop_rule", &self.pop_rule)
            .field(
                "clock",
                &if self.clock.is_some() {
                    "custom"
                } else {
                    "system"
                },
            )
            .finish()
    }
}

impl EncryptionOptions {
    /// The SDK's defaults: a TTL of 600 s, no read budget, no default limit, the system clock.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = agent_sessions::EncryptionOptions::new();
    /// assert_eq!(options.ttl_value(), Some(Duration::from_secs(600)));
    /// ```
    pub fn new() -> Self {
        EncryptionOptions {
            ttl: Some(DEFAULT_TTL),
            max_scan_items: None,
            settings: SessionSettings::default(),
            clock: None,
            pop_rule: PopRule::BySessionType,
        }
    }

    /// How long an item stays readable after it was written, in whole seconds (a fraction is
    /// dropped); `None`: for ever (Python's `ttl=None`, which also drops the 60-s check on
    /// tokens from the future). Expired items stay stored.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = agent_sessions::EncryptionOptions::new().ttl(Some(Duration::from_secs(60)));
    /// assert_eq!(options.ttl_value(), Some(Duration::from_secs(60)));
    /// ```
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    /// The TTL set.
    ///
    /// ```
    /// assert_eq!(agent_sessions::EncryptionOptions::new().ttl(None).ttl_value(), None);
    /// ```
    pub fn ttl_value(&self) -> Option<Duration> {
        self.ttl
    }

    /// The SDK's `max_scan_items`: at most this many rows read from the inner session by one
    /// `get_items` call (windows read again count again). When a positive limit (or no limit)
    /// cannot be answered within it, `get_items` fails with [`Error::InvalidArgument`] (the
    /// SDK's `RuntimeError`); with a budget a negative limit is refused (the SDK's
    /// `ValueError`). `Some(0)` is treated as `None` (the SDK refuses it at construction).
    ///
    /// ```
    /// let options = agent_sessions::EncryptionOptions::new().max_scan_items(Some(1000));
    /// # drop(options);
    /// ```
    pub fn max_scan_items(mut self, max: Option<u64>) -> Self {
        self.max_scan_items = max.filter(|&n| n > 0);
        self
    }

    /// The default limit of `get_items(None)`, as [`BasicSession::with_settings`] sets it.
    /// The wrapper always passes the inner session an explicit limit, so the inner session's
    /// own default limit does not apply through it (the SDK reads the inner session's
    /// settings; give the wrapper the same ones to get the SDK's answers).
    ///
    /// ```
    /// use agent_sessions::{EncryptionOptions, SessionSettings};
    /// let options = EncryptionOptions::new().settings(SessionSettings::with_limit(Some(20)));
    /// # drop(options);
    /// ```
    pub fn settings(mut self, settings: SessionSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The clock that stamps new tokens and measures the TTL (default: [`SystemTime::now`]).
    /// For tests: a fixed clock makes expiry deterministic.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let options = agent_sessions::EncryptionOptions::new()
    ///     .clock(|| UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    /// # drop(options);
    /// ```
    pub fn clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(Box::new(clock)));
        self
    }

    /// What a pop does with an envelope it cannot authenticate (default:
    /// [`PopRule::BySessionType`], the SDK's rules).
    ///
    /// ```
    /// use agent_sessions::{EncryptionOptions, PopRule};
    /// let options = EncryptionOptions::new().pop_rule(PopRule::SkipUnauthenticated);
    /// # drop(options);
    /// ```
    pub fn pop_rule(mut self, rule: PopRule) -> Self {
        self.pop_rule = rule;
        self
    }

    /// The clock's time in whole seconds since the epoch (0 before it), as `int(time.time())`.
    fn now(&self) -> u64 {
        let now = match &self.clock {
            Some(clock) => clock(),
            None => SystemTime::now(),
        };
        now.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// The session

/// A [`Session`] whose items are stored encrypted, readable by the Agents SDK's
/// `EncryptedSession` over the same store (and the reverse): the SDK's `EncryptedSession`
/// with `session_id` = the inner session's id. Wraps any session type — [`BasicSession`],
/// [`AdvancedSession`](crate::AdvancedSession) (its structure rows then hold the
/// envelopes, as in Python), [`ModelSession`](crate::testing::ModelSession), another wrapper, or a
/// `Box<dyn Session>`.
///
/// # Rules
///
/// As in the SDK (each is checked against the SDK by the crate's `tests/encryption.rs`):
///
/// - **Master key.** If it decodes as url-safe base64 (Python's lenient decoder: other
///   characters are skipped, decoding stops at the padding) to exactly 32 bytes, those bytes;
///   otherwise its UTF-8 bytes. Per session, HKDF-SHA256 (salt: the session id's UTF-8, info
///   `agents.session-store.hkdf.v1`, 32 bytes) gives the Fernet key.
/// - **Plaintext.** Python's `json.dumps(item, ensure_ascii=False, separators=(",", ":"))`,
///   UTF-8. A `null` item is refused (the SDK reads a decrypted `null` as "unreadable").
/// - **Reading.** Only envelopes (`__enc__` equal to 1, with `v`, `kid` and `payload`) whose
///   token authenticates, is not older than the TTL (default 600 s, by the reader's clock, in
///   whole seconds: `timestamp + ttl < now` has expired) and not more than 60 s in the future
///   are items; everything else — plaintext items included — is hidden and left stored. A
///   positive limit asks the inner session for `limit` rows, then twice as many, until `limit`
///   readable items are found or the session has no more rows.
/// - **Popping.** The newest readable item is removed and returned; expired envelopes and
///   plaintext items above it are removed on the way, except that a *falsy* plaintext row
///   (`{}`, `[]`, `""`, `0`, `false`) is removed and ends the pop with `None`, as in the SDK.
///   An envelope that does not authenticate (another key, a tampered token) stops the pop
///   with an error and stays stored over a [`BasicSession`] (the SDK's `SQLiteSession` rule);
///   over every other session type it is removed and skipped (the SDK's rule for other
///   backends). [`PopRule`] overrides the choice, e.g. behind a `Box<dyn Session>`.
///
/// # Differences from the SDK
///
/// Where Python raises on data it cannot read: an envelope whose payload is not a string, or
/// whose plaintext is not UTF-8 JSON (or is JSON this crate cannot hold, such as Python's bare
/// `NaN`), is hidden like an expired one. Python's `EncryptedSession` only takes dicts and
/// turns other values into dicts or raises; here any value but `null` is stored as it is. Over a
/// [`BasicSession`] the authentication check and the removal are two steps (the SDK runs
/// both in one SQLite transaction): an unauthenticated envelope added by another writer
/// between them is put back as the newest item and the pop fails as if it had been checked.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> agent_sessions::Result<()> {
/// use agent_sessions::{EncryptedSession, EncryptionKey, Store};
/// use serde_json::json;
///
/// let store = Store::open_in_memory()?;
/// let key = EncryptionKey::new(&EncryptionKey::generate_master_key()?)?;
/// let s = EncryptedSession::new(store.session("user-42"), &key);
/// s.add_items(vec![json!({"role": "user", "content": "hi"})]).await?;
/// assert_eq!(s.get_items(None).await?, vec![json!({"role": "user", "content": "hi"})]);
///
/// // What is stored is the envelope.
/// let raw = s.inner().get_items(None).await?;
/// assert_eq!(raw[0]["__enc__"], 1);
/// assert_eq!(raw[0]["kid"], "hkdf-v1");
///
/// // Another key reads nothing, and the items stay stored.
/// let other = EncryptionKey::new("another key")?;
/// let wrong = EncryptedSession::new(store.session("user-42"), &other);
/// assert!(wrong.get_items(None).await?.is_empty());
/// assert_eq!(s.pop_item().await?, Some(json!({"role": "user", "content": "hi"})));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EncryptedSession<S> {
    inner: S,
    key: FernetKey,
    options: EncryptionOptions,
}

impl<S: fmt::Debug> fmt::Debug for EncryptedSession<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedSession")
            .field("inner", &self.inner)
            .field("key", &format_args!("***"))
            .field("options", &self.options)
            .finish()
    }
}

impl<S: Session + 'static> EncryptedSession<S> {
    /// `inner` encrypted with the SDK's defaults ([`EncryptionOptions::new`]). The session key
    /// is derived here, once.
    ///
    /// ```
    /// use agent_sessions::{testing::ModelSession, EncryptedSession, EncryptionKey, Session};
    /// let key = EncryptionKey::new("secret")?;
    /// let s = EncryptedSession::new(ModelSession::new("a"), &key);
    /// assert_eq!(s.session_id(), "a");
    /// # Ok::<(), agent_sessions::Error>(())
    /// ```
    pub fn new(inner: S, key: &EncryptionKey) -> Self {
        EncryptedSession::with_options(inner, key, EncryptionOptions::new())
    }

    /// `inner` encrypted with these options.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_sessions::{testing::ModelSession, EncryptedSession, EncryptionKey, EncryptionOptions};
    /// let key = EncryptionKey::new("secret")?;
    /// let options = EncryptionOptions::new().ttl(Some(Duration::from_secs(86_400)));
    /// let s = EncryptedSession::with_options(ModelSession::new("a"), &key, options);
    /// # drop(s);
    /// # Ok::<(), agent_sessions::Error>(())
    /// ```
    pub fn with_options(inner: S, key: &EncryptionKey, options: EncryptionOptions) -> Self {
        let key = key.derive(inner.session_id());
        EncryptedSession {
            inner,
            key,
            options,
        }
    }

    /// The session's id (the inner session's).
    ///
    /// ```
    /// # let key = agent_sessions::EncryptionKey::new("k").unwrap();
    /// let s = agent_sessions::EncryptedSession::new(agent_sessions::testing::ModelSession::new("u1"), &key);
    /// assert_eq!(s.session_id(), "u1");
    /// ```
    pub fn session_id(&self) -> &str {
        self.inner.session_id()
    }

    /// The wrapped session: it reads and writes the envelopes.
    ///
    /// ```
    /// # let key = agent_sessions::EncryptionKey::new("k").unwrap();
    /// let s = agent_sessions::EncryptedSession::new(agent_sessions::testing::ModelSession::new("u1"), &key);
    /// assert_eq!(s.inner().snapshot().rows("u1").len(), 0);
    /// ```
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped session, unwrapped.
    ///
    /// ```
    /// # let key = agent_sessions::EncryptionKey::new("k").unwrap();
    /// let s = agent_sessions::EncryptedSession::new(agent_sessions::testing::ModelSession::new("u1"), &key);
    /// let model = s.into_inner();
    /// # drop(model);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The options in force.
    ///
    /// ```
    /// # let key = agent_sessions::EncryptionKey::new("k").unwrap();
    /// let s = agent_sessions::EncryptedSession::new(agent_sessions::testing::ModelSession::new("u1"), &key);
    /// assert!(s.options().ttl_value().is_some());
    /// ```
    pub fn options(&self) -> &EncryptionOptions {
        &self.options
    }

    /// The readable items, oldest first: `None` = the options' default limit; `Some(n > 0)` the
    /// newest `n` readable items (fewer if there are fewer); `Some(0)` none; `Some(n < 0)` all.
    /// Hidden items (expired, another key's, tampered, plaintext) are not counted and stay
    /// stored.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> agent_sessions::Result<()> {
    /// use agent_sessions::{testing::ModelSession, EncryptedSession, EncryptionKey, Session};
    /// use serde_json::json;
    /// let model = ModelSession::new("a");
    /// let s = EncryptedSession::new(model.clone(), &EncryptionKey::new("k")?);
    /// s.add_items(vec![json!(1), json!(2)]).await?;
    /// model.add_items(vec![json!("plaintext")]).await?;       // not an envelope: hidden
    /// assert_eq!(s.get_items(Some(1)).await?, vec![json!(2)]);
    /// # Ok(()) }
    /// ```
    pub async fn get_items(&self, limit: Option<i64>) -> Result<Vec<Item>> {
        let limit = limit.or(self.options.settings.limit);
        let mut budget = self.options.max_scan_items;
        if budget.is_some() && limit.is_some_and(|n| n < 0) {
            return Err(Error::InvalidArgument(format!(
                "session {:?}: a negative limit is refused when max_scan_items is set",
                self.session_id()
            )));
        }
        let wanted = limit.filter(|&n| n > 0);
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut window = match (wanted, budget) {
            (Some(n), b) => b.map_or(n, |b| n.min(to_i64(b))),
            (None, Some(b)) if limit.is_none() => to_i64(b),
            _ => {
                // Zero, negative, or everything without a budget: one read.
                let raw = self.inner.get_items(Some(limit.unwrap_or(-1))).await?;
                return Ok(self.readable(raw));
            }
        };
        loop {
            let raw = self.inner.get_items(Some(window)).await?;
            let fetched = raw.len();
            let mut valid = self.readable(raw);
            if let Some(n) = wanted {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if valid.len() >= n {
                    return Ok(valid.split_off(valid.len() - n));
                }
            }
            if i64::try_from(fetched).unwrap_or(i64::MAX) < window {
                return Ok(valid);
            }
            let mut next = window.saturating_mul(2);
            if let Some(left) = budget.as_mut() {
                *left = left.saturating_sub(fetched as u64);
                next = next.min(to_i64(*left));
                if next <= window {
                    return Err(Error::InvalidArgument(format!(
                        "session {:?}: max_scan_items exhausted before a complete history \
                         could be read; raise max_scan_items or keep less history",
                        self.session_id()
                    )));
                }
            }
            window = next;
        }
    }

    /// Encrypt and append `items` (all or nothing, as the inner session adds them). Items
    /// nested deeper than the store can read back are refused with
    /// [`Error::InvalidArgument`] before anything is written.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> agent_sessions::Result<()> {
    /// use agent_sessions::{testing::ModelSession, EncryptedSession, EncryptionKey};
    /// let s = EncryptedSession::new(ModelSession::new("a"), &EncryptionKey::new("k")?);
    /// s.add_items(vec![serde_json::json!({"role": "user", "content": "héllo"})]).await?;
    /// assert_eq!(s.get_items(None).await?.len(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn add_items(&self, items: Vec<Item>) -> Result<()> {
        let envelopes = self.encrypt_all(&items)?;
        self.inner.add_items(envelopes).await
    }

    /// Remove and return the newest readable item; expired envelopes and plaintext items newer
    /// than it are removed on the way (a falsy plaintext row ends the pop with `None`, as in
    /// the SDK). An envelope this key cannot authenticate is removed and skipped too, except
    /// over a [`BasicSession`], where the pop stops at it with [`Error::InvalidArgument`] and
    /// leaves it stored (the SDK's rules per backend; see [`PopRule`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> agent_sessions::Result<()> {
    /// use agent_sessions::{EncryptedSession, EncryptionKey, Store};
    /// use serde_json::json;
    /// let store = Store::open_in_memory()?;
    /// let mine = EncryptedSession::new(store.session("a"), &EncryptionKey::new("mine")?);
    /// let theirs = EncryptedSession::new(store.session("a"), &EncryptionKey::new("theirs")?);
    /// mine.add_items(vec![json!(1)]).await?;
    /// theirs.add_items(vec![json!(2)]).await?;
    /// assert!(mine.pop_item().await.is_err());                 // item 2 is not mine: kept
    /// assert_eq!(theirs.pop_item().await?, Some(json!(2)));
    /// assert_eq!(mine.pop_item().await?, Some(json!(1)));
    /// # Ok(()) }
    /// ```
    pub async fn pop_item(&self) -> Result<Option<Item>> {
        let keep = match self.options.pop_rule {
            PopRule::KeepUnauthenticated => true,
            PopRule::SkipUnauthenticated => false,
            PopRule::BySessionType => (&self.inner as &dyn Any).is::<BasicSession>(),
        };
        loop {
            let raw = if keep {
                match self.pop_authenticated().await? {
                    Some(item) => item,
                    None => return Ok(None),
                }
            } else {
                match self.inner.pop_item().await? {
                    Some(item) => item,
                    None => return Ok(None),
                }
            };
            if falsy(&raw) {
                // The SDK's `if not enc: return None`: a falsy plaintext row ends the pop.
                return Ok(None);
            }
            if let Some(item) = self.unwrap(&raw, self.options.now()) {
                return Ok(Some(item));
            }
        }
    }

    /// Delete the whole session (every item, readable or not).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> agent_sessions::Result<()> {
    /// use agent_sessions::{testing::ModelSession, EncryptedSession, EncryptionKey};
    /// let s = EncryptedSession::new(ModelSession::new("a"), &EncryptionKey::new("k")?);
    /// s.add_items(vec![serde_json::json!(1)]).await?;
    /// s.clear_session().await?;
    /// assert!(s.inner().snapshot().rows("a").is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn clear_session(&self) -> Result<()> {
        self.inner.clear_session().await
    }

    /// The SDK's `SQLiteSession` pop with validation: the newest row is checked before it is
    /// removed; an envelope that does not authenticate is an error and stays stored.
    async fn pop_authenticated(&self) -> Result<Option<Item>> {
        let Some(newest) = self.inner.get_items(Some(1)).await?.pop() else {
            return Ok(None);
        };
        if !self.authentic(&newest) {
            return Err(self.unauthenticated());
        }
        let Some(popped) = self.inner.pop_item().await? else {
            return Ok(None);
        };
        if popped != newest && !self.authentic(&popped) {
            // Another writer added it between the check and the pop: put it back.
            self.inner.add_items(vec![popped]).await?;
            return Err(self.unauthenticated());
        }
        Ok(Some(popped))
    }

    fn unauthenticated(&self) -> Error {
        Error::InvalidArgument(format!(
            "session {:?}: the newest item is an encrypted envelope this key cannot \
             authenticate (another key, or a damaged token); it was left stored",
            self.session_id()
        ))
    }

    /// Python's `authenticate` in `pop_item`: non-envelopes pass; an envelope passes if its
    /// token's HMAC is right (expired or not).
    fn authentic(&self, item: &Item) -> bool {
        match envelope_payload(item) {
            None => true,
            Some(Value::String(token)) => self.key.authenticate(token).is_some(),
            Some(_) => false,
        }
    }

    fn readable(&self, raw: Vec<Item>) -> Vec<Item> {
        let now = self.options.now();
        raw.iter()
            .filter_map(|item| self.unwrap(item, now))
            .collect()
    }

    /// Python's `_unwrap`: the item inside a readable envelope, else `None`.
    fn unwrap(&self, item: &Item, now: u64) -> Option<Item> {
        let Value::String(token) = envelope_payload(item)? else {
            return None;
        };
        let ttl = self.options.ttl.map(|t| t.as_secs());
        let plaintext = Zeroizing::new(self.key.decrypt(token, ttl, now)?);
        // Python's `_unwrap` answers `None` for "unreadable", so a `null` item is unreadable.
        parse_item(std::str::from_utf8(&plaintext).ok()?).filter(|item| !item.is_null())
    }

    fn encrypt_all(&self, items: &[Item]) -> Result<Vec<Item>> {
        let now = self.options.now();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.is_null() {
                return Err(Error::InvalidArgument(format!(
                    "item {} of session {:?} is null; the SDK's EncryptedSession cannot read \
                     a null item back, so nothing was written",
                    i + 1,
                    self.session_id()
                )));
            }
            let depth = nesting_depth(item);
            if depth > MAX_DEPTH {
                return Err(Error::InvalidArgument(format!(
                    "item {} of session {:?} is nested {depth} levels deep; at most \
                     {MAX_DEPTH} levels can be read back, so nothing was written",
                    i + 1,
                    self.session_id()
                )));
            }
            let mut plaintext = Zeroizing::new(String::new());
            write_compact(&mut plaintext, item);
            let token = self.key.encrypt(plaintext.as_bytes(), now)?;
            let mut envelope = Map::new();
            envelope.insert("__enc__".into(), Value::from(1));
            envelope.insert("v".into(), Value::from(VERSION));
            envelope.insert("kid".into(), Value::from(KID));
            envelope.insert("payload".into(), Value::from(token));
            out.push(Value::Object(envelope));
        }
        Ok(out)
    }
}

/// Python's truthiness of a JSON value: `null`, `false`, zero, `""`, `[]` and `{}` are false.
fn falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Python's `_is_encrypted_envelope`, returning the payload: an object whose `__enc__` equals 1
/// (Python's `==`: `1`, `1.0` and `true` do) and that has `payload`, `kid` and `v`.
fn envelope_payload(item: &Item) -> Option<&Value> {
    let Value::Object(map) = item else {
        return None;
    };
    let one = match map.get("__enc__")? {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() == Some(1.0),
        _ => false,
    };
    (one && map.contains_key("kid") && map.contains_key("v"))
        .then(|| map.get("payload"))
        .flatten()
}

/// Python's `json.dumps(v, ensure_ascii=False, separators=(",", ":"))`: compact, non-ASCII
/// written as is, `"`, `\` and control characters escaped as Python does, numbers as Python
/// writes them ([`crate::json`]).
fn write_compact(out: &mut String, v: &Value) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_compact(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_compact_str(out, key);
                out.push(':');
                write_compact(out, item);
            }
            out.push('}');
        }
        Value::String(s) => write_compact_str(out, s),
        scalar => crate::json::write_python_json(out, scalar),
    }
}

fn write_compact_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let b = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl<S: Session + 'static> Session for EncryptedSession<S> {
    fn session_id(&self) -> &str {
        self.inner.session_id()
    }
    fn get_items(&self, limit: Option<i64>) -> BoxFuture<'_, Result<Vec<Item>>> {
        Box::pin(EncryptedSession::get_items(self, limit))
    }
    fn add_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        Box::pin(EncryptedSession::add_items(self, items))
    }
    fn pop_item(&self) -> BoxFuture<'_, Result<Option<Item>>> {
        Box::pin(EncryptedSession::pop_item(self))
    }
    fn clear_session(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(EncryptedSession::clear_session(self))
    }
    fn replace_items(&self, items: Vec<Item>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let envelopes = self.encrypt_all(&items)?;
            self.inner.replace_items(envelopes).await
        })
    }
}

// Not under `--cfg agent_sessions_loom`: these tests touch shim primitives outside a loom model.
#[cfg(all(test, not(agent_sessions_loom)))]
mod tests {
    use super::*;

    /// Known answers made with the SDK and `cryptography` (tests/python/make_known_answers.py):
    /// for master keys of each form, the derived per-session key, the compact JSON of an item,
    /// and its token at a fixed time and IV — made here byte for byte, and decrypted back.
    #[test]
    fn encryption_matches_the_sdks_known_answers() {
        let data: Value =
            serde_json::from_str(include_str!("../../tests/data/known_answers.json")).unwrap();
        let cases = data["encryption"].as_array().unwrap();
        assert!(cases.len() >= 10);
        let unhex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        for case in cases {
            let what = format!("{} / {}", case["master_key"], case["session_id"]);
            let key = EncryptionKey::new(case["master_key"].as_str().unwrap())
                .unwrap()
                .derive(case["session_id"].as_str().unwrap());
            assert_eq!(
                hex(&key.0[..]),
                case["derived_key_hex"].as_str().unwrap(),
                "{what}: derived key"
            );
            let mut plaintext = String::new();
            write_compact(&mut plaintext, &case["item"]);
            assert_eq!(
                plaintext,
                case["plaintext"].as_str().unwrap(),
                "{what}: plaintext"
            );
            let time = case["time"].as_u64().unwrap();
            let iv: [u8; 16] = unhex(case["iv_hex"].as_str().unwrap()).try_into().unwrap();
            let token = case["token"].as_str().unwrap();
            assert_eq!(
                key.encrypt_with_iv(plaintext.as_bytes(), time, &iv)
                    .unwrap(),
                token,
                "{what}: token"
            );
            let decrypted = key.decrypt(token, Some(60), time + 30).unwrap();
            let item: Value = serde_json::from_slice(&decrypted).unwrap();
            assert_eq!(item, case["item"], "{what}: decrypted item");
            assert_eq!(
                key.decrypt(token, Some(60), time + 61),
                None,
                "{what}: expired"
            );
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Expected values printed by CPython 3.11's `base64.urlsafe_b64decode` (`None`: raises).
    #[test]
    fn master_key_decoding_matches_python() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            ("QQ", None),
            ("QQ=", None),
            ("QQ==", Some("41")),
            ("QQ===", Some("41")),
            ("QUI", None),
            ("QUI=", Some("4142")),
            ("QUJD", Some("414243")),
            ("Q", None),
            ("Q=", None),
            ("Q===", None),
            ("=QQ==", Some("41")),
            ("Q=Q==", Some("41")),
            ("QQ==QUJD", Some("41")),
            ("QQ=!=", Some("41")),
            ("Q Q = =", Some("41")),
            ("QUJD\n", Some("414243")),
            ("ab+/", Some("69bfbf")),
            ("ab-_", Some("69bfbf")),
            ("a.b.c.d", Some("69b71d")),
            ("QUJDRA", None),
            ("QUJDRA=", None),
            ("QUJDRA==x", Some("41424344")),
            ("QR==", Some("41")),
            ("QUJ=", Some("4142")),
            ("====", Some("")),
            ("Q=U=J=D=", Some("4142")),
            ("QU=JD", Some("414243")),
            ("é", None),
            ("QUJD=QUJD", Some("414243414243")),
        ];
        for (input, want) in cases {
            let got = python_urlsafe_b64decode(input).map(|b| hex(&b));
            assert_eq!(got.as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn compact_encoding_matches_python() {
        // Printed by Python's json.dumps(..., ensure_ascii=False, separators=(",", ":")).
        let v: Value = serde_json::from_str(
            r#"{"s":"\u007f\u0000\u001f\u2028é😀\"\\/\n\r\t\b\f","a":[1,2.5,1e16,-0.0,1e-7],"b":{},"c":[]}"#,
        )
        .unwrap();
        let mut out = String::new();
        write_compact(&mut out, &v);
        assert_eq!(
            out,
            "{\"s\":\"\u{7f}\\u0000\\u001f\u{2028}é😀\\\"\\\\/\\n\\r\\t\\b\\f\",\
             \"a\":[1,2.5,1e+16,-0.0,1e-07],\"b\":{},\"c\":[]}"
        );
    }

    #[test]
    fn tokens_round_trip_and_fail_closed() {
        let key = EncryptionKey::new("k").unwrap().derive("s");
        let t = key.encrypt(b"hello", 1_000).unwrap();
        assert_eq!(
            key.decrypt(&t, Some(600), 1_000).as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            key.decrypt(&t, Some(600), 1_600).as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(key.decrypt(&t, Some(600), 1_601), None, "expired");
        assert!(
            key.decrypt(&t, Some(600), 940).is_some(),
            "60 s of skew allowed"
        );
        assert_eq!(
            key.decrypt(&t, Some(600), 939),
            None,
            "too far in the future"
        );
        assert!(
            key.decrypt(&t, None, 1_000_000).is_some(),
            "no TTL, no time check"
        );
        assert_eq!(key.authenticate(&t).map(|(_, ts)| ts), Some(1_000));
        let other = EncryptionKey::new("k").unwrap().derive("other session");
        assert_eq!(other.decrypt(&t, None, 1_000), None);
        assert!(other.authenticate(&t).is_none());
        // Garbage of every length, and a timestamp that would overflow, never panic.
        for len in 0..80 {
            let mut data = vec![0x80u8; len];
            data.iter_mut().skip(1).take(8).for_each(|b| *b = 0xff);
            let token = base64::engine::general_purpose::URL_SAFE.encode(&data);
            assert_eq!(key.decrypt(&token, Some(u64::MAX), u64::MAX), None);
            assert!(key.authenticate(&token).is_none());
        }
    }

    #[test]
    fn nothing_prints_the_key() {
        let key = EncryptionKey::new("super-secret-master").unwrap();
        let s = EncryptedSession::new(crate::testing::ModelSession::new("a"), &key);
        let printed = format!("{key:?} {:?}", s.options());
        assert!(!printed.contains("super-secret"), "{printed}");
        assert_eq!(format!("{key:?}"), "EncryptionKey(***)");
    }
}
