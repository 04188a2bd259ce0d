//! Link-time set-up for libtorch: keep libtorch_cuda linked, set an rpath, record versions.

use std::path::Path;

fn main() {
    // torch-sys (links = "tch") tells dependants where libtorch's shared libraries live.
    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_default();
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/determinism.cpp");
    println!("cargo:rerun-if-changed=csrc/device_memory.cpp");
    println!("cargo:rerun-if-changed=csrc/adam_state.cpp");
    println!("cargo:rerun-if-changed=csrc/ieee_sqrt.cpp");
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    assert!(!lib_dir.is_empty(), "torch-sys did not report libtorch's lib folder (DEP_TCH_LIBTORCH_LIB)");
    let lib = Path::new(&lib_dir);
    compile_determinism_shim(lib);
    // The binary finds libtorch without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // No symbol of libtorch_cuda is referenced, so the linker would drop it and CUDA would look
    // absent on a GPU machine; force it in (only where this libtorch has CUDA at all).
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={lib_dir}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    // libtorch's own version string (e.g. 2.11.0+cu130) for `fedsim info` and run.json.
    let version = lib
        .parent()
        .map(|torch| torch.join("version.py"))
        .and_then(|file| std::fs::read_to_string(file).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=FEDSIM_LIBTORCH_VERSION={version}");
}

/// libtorch's determinism switches, device memory figures, Adam's state, kernel registration
/// and CPU autocast are C++ only; a few lines of C++ expose them to Rust.
fn compile_determinism_shim(lib: &Path) {
    let include = lib.parent().expect("libtorch lib folder has a parent").join("include");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        // Lets the compiler vectorise ieee_sqrt.cpp's loop (sqrtps is as exact as sqrtss).
        .flag_if_supported("-fno-math-errno")
        .file("csrc/determinism.cpp")
        .file("csrc/device_memory.cpp")
        .file("csrc/adam_state.cpp")
        .file("csrc/ieee_sqrt.cpp")
        .file("csrc/autocast.cpp")
        .compile("fedsim_determinism");
}
