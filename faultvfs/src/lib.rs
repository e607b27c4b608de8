//! A fault-injecting SQLite VFS for tests: it wraps SQLite's default (`unix`) VFS, so a store
//! opened through it (`StoreBuilder::vfs(faultvfs::NAME)`, feature `test-hooks`) runs unchanged,
//! and it adds two things for the files under a registered [`Scope`] (a directory):
//!
//! - **A write trace** ([`Event`]s): every create, write, truncate, sync and delete, in the order
//!   they happened. [`Replay`] turns any prefix of it into the bytes a **power loss** at that
//!   moment could leave: each file's content as of its last successful `xSync`, plus none, all,
//!   a random subset of the writes since, or all of them with the last one torn at sector
//!   granularity — the semantics of SQLite's own crash-test VFS (`src/test6.c`). The `-shm` file
//!   is memory (SQLite rebuilds it), so it is never part of an image.
//! - **I/O faults** ([`Plan`]): the `nth` call of a kind (read, write, sync, truncate, lock) and
//!   the `count - 1` calls of that kind after it fail with EIO (`SQLITE_IOERR_*`), ENOSPC
//!   (`SQLITE_FULL`) or a short write (half the bytes written, then `SQLITE_FULL`, as the unix VFS
//!   reports one).
//!
//! Files outside every scope pass straight through. The VFS declares `iVersion` 2 I/O methods,
//! forwarding the WAL shared-memory methods (`xShmMap`, `xShmLock`, `xShmBarrier`,
//! `xShmUnmap`) and not offering `xFetch`, so every page read goes through `xRead` (no mmap).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use libsqlite3_sys as ffi;

/// The name the VFS is registered under.
pub const NAME: &str = "faultvfs";

/// Register the VFS (once per process; not as the default). Returns its name.
pub fn register() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| unsafe { register_now() });
    NAME
}

// ---- scopes, traces, plans -----------------------------------------------------------------

/// A kind of I/O call that a [`Plan`] can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Read,
    Write,
    Sync,
    Truncate,
    /// `xLock` (the file lock; WAL-index locks are `xShmLock` and are not failed).
    Lock,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Read,
        Kind::Write,
        Kind::Sync,
        Kind::Truncate,
        Kind::Lock,
    ];
    fn index(self) -> usize {
        self as usize
    }
}

/// What an injected failure looks like to SQLite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// EIO: `SQLITE_IOERR_READ`/`_WRITE`/`_FSYNC`/`_TRUNCATE`/`_LOCK`.
    Eio,
    /// ENOSPC: `SQLITE_FULL` (reads and locks: their `SQLITE_IOERR_*`).
    Enospc,
    /// A write that stores its first half, then fails with `SQLITE_FULL` (other kinds: EIO).
    Short,
}

/// Fail the `nth` (1-based, counted from [`Scope::arm`]) call of `kind` and the `count - 1`
/// calls of that kind after it (`u64::MAX`: until [`Scope::disarm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub kind: Kind,
    pub nth: u64,
    pub count: u64,
    pub fault: Fault,
}

/// One recorded effect on a file of a scope. `file` is the name inside the scope's directory.
#[derive(Clone, Debug)]
pub enum Event {
    /// The file was opened (created empty if it did not exist).
    Open {
        file: Arc<str>,
    },
    Write {
        file: Arc<str>,
        offset: u64,
        data: Vec<u8>,
    },
    Truncate {
        file: Arc<str>,
        size: u64,
    },
    /// A successful `xSync`: every earlier write and truncate of the file is now durable.
    Sync {
        file: Arc<str>,
    },
    /// The file was deleted (taken as durable at once).
    Delete {
        file: Arc<str>,
    },
}

#[derive(Default)]
struct ScopeState {
    trace: Vec<Event>,
    calls: [u64; 5],
    armed: [u64; 5],
    plan: Option<Plan>,
    fired: [u64; 5],
    /// Writes that reached the file (in part, for a short write).
    written: u64,
}

/// The files under one directory: their write trace, their call counts, their fault plan.
pub struct Scope {
    dir: PathBuf,
    record: bool,
    state: Mutex<ScopeState>,
}

/// Every registered scope: its canonical directory, and the scope while it lives.
type Scopes = Vec<(PathBuf, Weak<Scope>)>;

fn scopes() -> MutexGuard<'static, Scopes> {
    static SCOPES: OnceLock<Mutex<Scopes>> = OnceLock::new();
    SCOPES
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

impl Scope {
    /// Watch the files under `dir` (which must exist). `record`: keep the write trace (power-
    /// loss tests); call counts and fault plans work either way.
    pub fn new(dir: &Path, record: bool) -> Arc<Scope> {
        register();
        let dir = std::fs::canonicalize(dir).expect("scope directory");
        let scope = Arc::new(Scope {
            dir: dir.clone(),
            record,
            state: Mutex::new(ScopeState::default()),
        });
        let mut all = scopes();
        all.retain(|(_, w)| w.strong_count() > 0);
        all.push((dir, Arc::downgrade(&scope)));
        scope
    }

    fn find(path: &Path) -> Option<(Arc<Scope>, Arc<str>)> {
        let all = scopes();
        all.iter().find_map(|(dir, w)| {
            let rel = path.strip_prefix(dir).ok()?;
            let scope = w.upgrade()?;
            Some((scope, Arc::from(rel.to_string_lossy().as_ref())))
        })
    }

    fn lock(&self) -> MutexGuard<'_, ScopeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Events recorded so far: a crash point `k` means "the first `k` happened".
    pub fn events(&self) -> usize {
        self.lock().trace.len()
    }

    /// A copy of the trace.
    pub fn trace(&self) -> Vec<Event> {
        self.lock().trace.clone()
    }

    /// Calls of `kind` so far (all files of the scope, all connections).
    pub fn calls(&self, kind: Kind) -> u64 {
        self.lock().calls[kind.index()]
    }

    /// Writes that reached a file of the scope so far (a short write counts).
    pub fn writes_done(&self) -> u64 {
        self.lock().written
    }

    /// Faults injected so far, of `kind`.
    pub fn fired(&self, kind: Kind) -> u64 {
        self.lock().fired[kind.index()]
    }

    /// Start failing calls as `plan` says (replacing any earlier plan).
    pub fn arm(&self, plan: Plan) {
        let mut st = self.lock();
        st.armed = st.calls;
        st.plan = Some(plan);
    }

    /// Stop failing calls.
    pub fn disarm(&self) {
        self.lock().plan = None;
    }

    /// Count a call of `kind`; `Some(fault)` if it must fail.
    fn call(&self, kind: Kind) -> Option<Fault> {
        let mut st = self.lock();
        let i = kind.index();
        st.calls[i] += 1;
        let plan = st.plan?;
        if plan.kind != kind {
            return None;
        }
        let n = st.calls[i] - st.armed[i];
        if n >= plan.nth && n - plan.nth < plan.count {
            st.fired[i] += 1;
            Some(plan.fault)
        } else {
            None
        }
    }

    fn push(&self, event: Event) {
        if self.record {
            self.lock().trace.push(event);
        }
    }
}

// ---- power loss ------------------------------------------------------------------------------

/// What a power loss keeps of the writes not yet synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Nothing since each file's last sync.
    DropAll,
    /// Everything (the OS had written it all: a process crash looks like this).
    KeepAll,
    /// Each unsynced write kept or lost independently (seeded).
    Subset(u64),
    /// Every unsynced write kept but the last one, of which a random set of 512-byte sectors
    /// reached the disk (seeded).
    TornLast(u64),
}

#[derive(Default, Clone)]
struct FileImage {
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Clone)]
enum Pending {
    Write(u64, Vec<u8>),
    Truncate(u64),
}

fn apply(buf: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write(off, data) => {
            let (off, end) = (*off as usize, *off as usize + data.len());
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[off..end].copy_from_slice(data);
        }
        Pending::Truncate(size) => buf.resize(*size as usize, 0),
    }
}

/// A small deterministic generator (xorshift64*), so a failing case replays from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// Replays a trace forward to crash points (in increasing order) and builds the files a power
/// loss there could leave.
pub struct Replay<'a> {
    trace: &'a [Event],
    at: usize,
    files: BTreeMap<Arc<str>, FileImage>,
}

impl<'a> Replay<'a> {
    pub fn new(trace: &'a [Event]) -> Replay<'a> {
        Replay {
            trace,
            at: 0,
            files: BTreeMap::new(),
        }
    }

    /// Apply events up to (not including) `k`. Crash points must not go backwards.
    pub fn advance_to(&mut self, k: usize) {
        assert!(
            k >= self.at && k <= self.trace.len(),
            "crash points go forward"
        );
        for e in &self.trace[self.at..k] {
            match e {
                Event::Open { file } => {
                    self.files.entry(file.clone()).or_default();
                }
                Event::Write { file, offset, data } => self
                    .files
                    .entry(file.clone())
                    .or_default()
                    .pending
                    .push(Pending::Write(*offset, data.clone())),
                Event::Truncate { file, size } => self
                    .files
                    .entry(file.clone())
                    .or_default()
                    .pending
                    .push(Pending::Truncate(*size)),
                Event::Sync { file } => {
                    let f = self.files.entry(file.clone()).or_default();
                    for p in std::mem::take(&mut f.pending) {
                        apply(&mut f.durable, &p);
                    }
                }
                Event::Delete { file } => {
                    self.files.remove(file);
                }
            }
        }
        self.at = k;
    }

    /// Writes not yet synced, over all files, at the current point.
    pub fn unsynced(&self) -> usize {
        self.files.values().map(|f| f.pending.len()).sum()
    }

    /// The files (name inside the scope directory → bytes) after a power loss now.
    pub fn image(&self, loss: Loss) -> Vec<(Arc<str>, Vec<u8>)> {
        let mut rng = Rng::new(match loss {
            Loss::Subset(s) | Loss::TornLast(s) => s,
            _ => 0,
        });
        self.files
            .iter()
            .map(|(name, f)| {
                let mut buf = f.durable.clone();
                let last = f.pending.len().checked_sub(1);
                for (i, p) in f.pending.iter().enumerate() {
                    match (loss, p) {
                        (Loss::DropAll, _) => {}
                        (Loss::KeepAll, _) | (_, Pending::Truncate(_)) => apply(&mut buf, p),
                        (Loss::Subset(_), _) => {
                            if rng.coin() {
                                apply(&mut buf, p)
                            }
                        }
                        (Loss::TornLast(_), Pending::Write(off, data)) => {
                            if Some(i) != last {
                                apply(&mut buf, p);
                                continue;
                            }
                            for (n, sector) in data.chunks(512).enumerate() {
                                if rng.coin() {
                                    let at = off + (n * 512) as u64;
                                    apply(&mut buf, &Pending::Write(at, sector.to_vec()));
                                }
                            }
                        }
                    }
                }
                (name.clone(), buf)
            })
            .collect()
    }
}

/// Write an [`Replay::image`] into `dir` (files named as in the scope).
pub fn write_image(dir: &Path, image: &[(Arc<str>, Vec<u8>)]) -> std::io::Result<()> {
    for (name, bytes) in image {
        std::fs::write(dir.join(&**name), bytes)?;
    }
    Ok(())
}

// ---- the VFS ---------------------------------------------------------------------------------

/// Our `sqlite3_file`: SQLite allocates `szOsFile` bytes; the wrapped VFS's file follows.
#[repr(C)]
struct FaultFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// `Box<Watched>` as a raw pointer; null for files outside every scope.
    watched: *mut Watched,
}

struct Watched {
    scope: Arc<Scope>,
    name: Arc<str>,
}

static REAL: std::sync::atomic::AtomicPtr<ffi::sqlite3_vfs> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

unsafe fn register_now() {
    let real = ffi::sqlite3_vfs_find(std::ptr::null());
    assert!(!real.is_null(), "no default SQLite VFS");
    REAL.store(real, std::sync::atomic::Ordering::SeqCst);
    let name: &'static CStr = Box::leak(CString::new(NAME).unwrap().into_boxed_c_str());
    let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: (std::mem::size_of::<FaultFile>() as c_int) + (*real).szOsFile,
        mxPathname: (*real).mxPathname,
        pNext: std::ptr::null_mut(),
        zName: name.as_ptr(),
        pAppData: std::ptr::null_mut(),
        xOpen: Some(v_open),
        xDelete: Some(v_delete),
        xAccess: Some(v_access),
        xFullPathname: Some(v_full_pathname),
        xDlOpen: None,
        xDlError: None,
        xDlSym: None,
        xDlClose: None,
        xRandomness: Some(v_randomness),
        xSleep: Some(v_sleep),
        xCurrentTime: Some(v_current_time),
        xGetLastError: Some(v_get_last_error),
        xCurrentTimeInt64: Some(v_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }));
    let rc = ffi::sqlite3_vfs_register(vfs, 0);
    assert_eq!(rc, ffi::SQLITE_OK, "sqlite3_vfs_register");
}

fn real_vfs() -> *mut ffi::sqlite3_vfs {
    REAL.load(std::sync::atomic::Ordering::SeqCst)
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(f_close),
    xRead: Some(f_read),
    xWrite: Some(f_write),
    xTruncate: Some(f_truncate),
    xSync: Some(f_sync),
    xFileSize: Some(f_file_size),
    xLock: Some(f_lock),
    xUnlock: Some(f_unlock),
    xCheckReservedLock: Some(f_check_reserved_lock),
    xFileControl: Some(f_file_control),
    xSectorSize: Some(f_sector_size),
    xDeviceCharacteristics: Some(f_device_characteristics),
    xShmMap: Some(f_shm_map),
    xShmLock: Some(f_shm_lock),
    xShmBarrier: Some(f_shm_barrier),
    xShmUnmap: Some(f_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

fn path_of(z: *const c_char) -> Option<PathBuf> {
    if z.is_null() {
        return None;
    }
    let s = unsafe { CStr::from_ptr(z) }.to_str().ok()?;
    Some(PathBuf::from(s))
}

unsafe extern "C" fn v_open(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real = real_vfs();
    let ours = file as *mut FaultFile;
    let inner = (file as *mut u8).add(std::mem::size_of::<FaultFile>()) as *mut ffi::sqlite3_file;
    (*ours).base.pMethods = std::ptr::null();
    (*ours).real = inner;
    (*ours).watched = std::ptr::null_mut();
    (*inner).pMethods = std::ptr::null();
    let rc = ((*real).xOpen.unwrap())(real, z_name, inner, flags, out_flags);
    if (*inner).pMethods.is_null() {
        return rc;
    }
    (*ours).base.pMethods = &METHODS;
    if rc == ffi::SQLITE_OK {
        if let Some((scope, name)) = path_of(z_name).and_then(|p| Scope::find(&p)) {
            scope.push(Event::Open { file: name.clone() });
            (*ours).watched = Box::into_raw(Box::new(Watched { scope, name }));
        }
    }
    rc
}

unsafe extern "C" fn v_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    let real = real_vfs();
    let rc = ((*real).xDelete.unwrap())(real, z_name, sync_dir);
    if rc == ffi::SQLITE_OK {
        if let Some((scope, name)) = path_of(z_name).and_then(|p| Scope::find(&p)) {
            scope.push(Event::Delete { file: name });
        }
    }
    rc
}

unsafe extern "C" fn v_access(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    let real = real_vfs();
    ((*real).xAccess.unwrap())(real, z_name, flags, out)
}

unsafe extern "C" fn v_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let real = real_vfs();
    ((*real).xFullPathname.unwrap())(real, z_name, n, out)
}

unsafe extern "C" fn v_randomness(
    _vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let real = real_vfs();
    ((*real).xRandomness.unwrap())(real, n, out)
}

unsafe extern "C" fn v_sleep(_vfs: *mut ffi::sqlite3_vfs, us: c_int) -> c_int {
    let real = real_vfs();
    ((*real).xSleep.unwrap())(real, us)
}

unsafe extern "C" fn v_current_time(_vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    let real = real_vfs();
    ((*real).xCurrentTime.unwrap())(real, out)
}

unsafe extern "C" fn v_current_time_int64(_vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    let real = real_vfs();
    match (*real).xCurrentTimeInt64 {
        Some(f) if (*real).iVersion >= 2 => f(real, out),
        _ => {
            let mut t = 0.0;
            let rc = ((*real).xCurrentTime.unwrap())(real, &mut t);
            *out = (t * 86_400_000.0) as i64;
            rc
        }
    }
}

unsafe extern "C" fn v_get_last_error(
    _vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let real = real_vfs();
    match (*real).xGetLastError {
        Some(f) => f(real, n, out),
        None => 0,
    }
}

unsafe fn parts<'a>(f: *mut ffi::sqlite3_file) -> (*mut ffi::sqlite3_file, Option<&'a Watched>) {
    let ours = f as *mut FaultFile;
    ((*ours).real, (*ours).watched.as_ref())
}

unsafe fn methods(real: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*real).pMethods
}

unsafe extern "C" fn f_close(f: *mut ffi::sqlite3_file) -> c_int {
    let ours = f as *mut FaultFile;
    let real = (*ours).real;
    let rc = (methods(real).xClose.unwrap())(real);
    if !(*ours).watched.is_null() {
        drop(Box::from_raw((*ours).watched));
        (*ours).watched = std::ptr::null_mut();
    }
    rc
}

fn io_code(kind: Kind, fault: Fault) -> c_int {
    match (kind, fault) {
        (Kind::Write, Fault::Enospc | Fault::Short) => ffi::SQLITE_FULL,
        (Kind::Sync | Kind::Truncate, Fault::Enospc) => ffi::SQLITE_FULL,
        (Kind::Read, _) => ffi::SQLITE_IOERR_READ,
        (Kind::Write, _) => ffi::SQLITE_IOERR_WRITE,
        (Kind::Sync, _) => ffi::SQLITE_IOERR_FSYNC,
        (Kind::Truncate, _) => ffi::SQLITE_IOERR_TRUNCATE,
        (Kind::Lock, _) => ffi::SQLITE_IOERR_LOCK,
    }
}

unsafe extern "C" fn f_read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    let (real, w) = parts(f);
    if let Some(fault) = w.and_then(|w| w.scope.call(Kind::Read)) {
        return io_code(Kind::Read, fault);
    }
    (methods(real).xRead.unwrap())(real, buf, amt, off)
}

unsafe extern "C" fn f_write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    let (real, w) = parts(f);
    let Some(w) = w else {
        return (methods(real).xWrite.unwrap())(real, buf, amt, off);
    };
    let mut amt_written = amt;
    let fault = w.scope.call(Kind::Write);
    match fault {
        Some(Fault::Short) if amt > 1 => amt_written = amt / 2,
        Some(fault) => return io_code(Kind::Write, fault),
        None => {}
    }
    let rc = (methods(real).xWrite.unwrap())(real, buf, amt_written, off);
    if rc == ffi::SQLITE_OK {
        w.scope.lock().written += 1;
    }
    if rc == ffi::SQLITE_OK && w.scope.record {
        let data = std::slice::from_raw_parts(buf as *const u8, amt_written as usize).to_vec();
        w.scope.push(Event::Write {
            file: w.name.clone(),
            offset: off as u64,
            data,
        });
    }
    match fault {
        Some(fault) if rc == ffi::SQLITE_OK => io_code(Kind::Write, fault),
        _ => rc,
    }
}

unsafe extern "C" fn f_truncate(f: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let (real, w) = parts(f);
    if let Some(fault) = w.and_then(|w| w.scope.call(Kind::Truncate)) {
        return io_code(Kind::Truncate, fault);
    }
    let rc = (methods(real).xTruncate.unwrap())(real, size);
    if let (ffi::SQLITE_OK, Some(w)) = (rc, w) {
        w.scope.push(Event::Truncate {
            file: w.name.clone(),
            size: size as u64,
        });
    }
    rc
}

unsafe extern "C" fn f_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    let (real, w) = parts(f);
    if let Some(fault) = w.and_then(|w| w.scope.call(Kind::Sync)) {
        return io_code(Kind::Sync, fault);
    }
    let rc = (methods(real).xSync.unwrap())(real, flags);
    if let (ffi::SQLITE_OK, Some(w)) = (rc, w) {
        w.scope.push(Event::Sync {
            file: w.name.clone(),
        });
    }
    rc
}

unsafe extern "C" fn f_file_size(f: *mut ffi::sqlite3_file, out: *mut ffi::sqlite3_int64) -> c_int {
    let (real, _) = parts(f);
    (methods(real).xFileSize.unwrap())(real, out)
}

unsafe extern "C" fn f_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (real, w) = parts(f);
    if let Some(fault) = w.and_then(|w| w.scope.call(Kind::Lock)) {
        return io_code(Kind::Lock, fault);
    }
    (methods(real).xLock.unwrap())(real, level)
}

unsafe extern "C" fn f_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let (real, _) = parts(f);
    (methods(real).xUnlock.unwrap())(real, level)
}

unsafe extern "C" fn f_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let (real, _) = parts(f);
    (methods(real).xCheckReservedLock.unwrap())(real, out)
}

unsafe extern "C" fn f_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    let (real, _) = parts(f);
    (methods(real).xFileControl.unwrap())(real, op, arg)
}

unsafe extern "C" fn f_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    let (real, _) = parts(f);
    (methods(real).xSectorSize.unwrap())(real)
}

unsafe extern "C" fn f_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    let (real, _) = parts(f);
    (methods(real).xDeviceCharacteristics.unwrap())(real)
}

unsafe extern "C" fn f_shm_map(
    f: *mut ffi::sqlite3_file,
    pg: c_int,
    pgsz: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let (real, _) = parts(f);
    match methods(real).xShmMap {
        Some(m) if methods(real).iVersion >= 2 => m(real, pg, pgsz, extend, out),
        _ => ffi::SQLITE_IOERR_SHMMAP,
    }
}

unsafe extern "C" fn f_shm_lock(
    f: *mut ffi::sqlite3_file,
    off: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let (real, _) = parts(f);
    (methods(real).xShmLock.unwrap())(real, off, n, flags)
}

unsafe extern "C" fn f_shm_barrier(f: *mut ffi::sqlite3_file) {
    let (real, _) = parts(f);
    (methods(real).xShmBarrier.unwrap())(real)
}

unsafe extern "C" fn f_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let (real, _) = parts(f);
    (methods(real).xShmUnmap.unwrap())(real, delete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(file: &str, offset: u64, data: &[u8]) -> Event {
        Event::Write {
            file: file.into(),
            offset,
            data: data.to_vec(),
        }
    }

    #[test]
    fn replay_keeps_synced_bytes_and_drops_or_keeps_the_rest() {
        let trace = vec![
            Event::Open { file: "db".into() },
            w("db", 0, b"aaaa"),
            Event::Sync { file: "db".into() },
            w("db", 2, b"bbbb"),
            w("db", 0, b"c"),
        ];
        let mut r = Replay::new(&trace);
        r.advance_to(2);
        assert_eq!(r.image(Loss::DropAll), vec![("db".into(), vec![])]);
        assert_eq!(
            r.image(Loss::KeepAll),
            vec![("db".into(), b"aaaa".to_vec())]
        );
        r.advance_to(5);
        assert_eq!(r.unsynced(), 2);
        assert_eq!(r.image(Loss::DropAll)[0].1, b"aaaa");
        assert_eq!(r.image(Loss::KeepAll)[0].1, b"cabbbb");
        let subsets: std::collections::BTreeSet<Vec<u8>> = (0..64)
            .map(|s| r.image(Loss::Subset(s))[0].1.clone())
            .collect();
        assert_eq!(subsets.len(), 4, "{subsets:?}");
    }

    #[test]
    fn a_torn_write_keeps_some_sectors() {
        let trace = vec![Event::Open { file: "w".into() }, w("w", 0, &[7u8; 2048])];
        let mut r = Replay::new(&trace);
        r.advance_to(2);
        let torn: std::collections::BTreeSet<Vec<u8>> = (0..64)
            .map(|s| r.image(Loss::TornLast(s))[0].1.clone())
            .collect();
        assert!(torn.len() > 4, "sector subsets: {}", torn.len());
    }

    #[test]
    fn deleted_files_leave_no_image() {
        let trace = vec![
            Event::Open { file: "j".into() },
            w("j", 0, b"x"),
            Event::Sync { file: "j".into() },
            Event::Delete { file: "j".into() },
        ];
        let mut r = Replay::new(&trace);
        r.advance_to(4);
        assert!(r.image(Loss::KeepAll).is_empty());
    }
}
