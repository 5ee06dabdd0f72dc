//! Builds the C++ glue against the system's RE2 (Debian's `libre2-dev`: `/usr/include/re2/re2.h`,
//! `libre2.a`) and links RE2 statically, so the binary needs no RE2 at run time.

fn main() {
    println!("cargo:rerun-if-changed=src/shim.cc");
    cc::Build::new().cpp(true).std("c++17").file("src/shim.cc").warnings(true).compile("sluice_re2_shim");
    // Debian puts libre2.a in the multiarch directory, which rustc does not search by itself.
    for dir in ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib"] {
        if std::path::Path::new(dir).join("libre2.a").exists() {
            println!("cargo:rustc-link-search=native={dir}");
        }
    }
    println!("cargo:rustc-link-lib=static=re2");
    println!("cargo:rustc-link-lib=dylib=stdc++");
}
