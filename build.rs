//! Link-time settings for the `hubferry` binary.
//!
//! On glibc targets the binary's relative relocations are packed (`-z pack-relative-relocs`,
//! the DT_RELR format). A position-independent Rust binary of this size carries about 600 KB
//! of `.rela.dyn` entries, which the loader reads once at start-up and which then stay
//! resident for the life of the process; packed, they take under 10 KB. Measured on the
//! bench's idle hubferry: 0.68 MB less resident memory, the same code (docs/benchmarks.md).
//!
//! The binary then needs glibc 2.36 or newer (it asks for `GLIBC_ABI_DT_RELR`), which every
//! supported build host has; `make dist` prefers the static musl build for older systems,
//! and musl's loader before 1.2.4 cannot read the format, so musl is left alone. GNU ld
//! before 2.38 ignores the option with a warning. Build with `NO_PACK_RELATIVE_RELOCS=1` in the
//! environment to link the classic way, for a machine whose glibc is older than 2.36. (Not a
//! `HUBFERRY_` variable: the server refuses those it does not know.)

fn main() {
    println!("cargo:rerun-if-env-changed=NO_PACK_RELATIVE_RELOCS");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu && std::env::var_os("NO_PACK_RELATIVE_RELOCS").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
