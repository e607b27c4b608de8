//! Links the extension against no libsqlite3 (src/sqlite_link.rs says why): libsqlite3-sys asks
//! the linker for `-lsqlite3`, and this puts an empty linker script named `libsqlite3.so`
//! first on the search path, so the request resolves to nothing and the `sqlite3_*` references
//! stay for the dynamic loader to bind at import.
use std::path::PathBuf;

fn main() {
    let dir =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("link-stub");
    std::fs::create_dir_all(&dir).expect("creating the link stub's directory");
    std::fs::write(
        dir.join("libsqlite3.so"),
        "/* empty: no libsqlite3 is linked; the interpreter's SQLite is bound at import */\n",
    )
    .expect("writing the link stub");
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rerun-if-changed=build.rs");
}
