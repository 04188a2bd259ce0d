//! `fedsim info`: fedsim's and libtorch's versions, devices, CPU kernels and where data is.

use std::path::PathBuf;

use anyhow::Result;

use crate::data::{prepare, DataDirs};
use crate::runtime::{self, TorchInfo};

pub fn info(dirs: &DataDirs) -> Result<()> {
    let torch = TorchInfo::gather();
    println!("fedsim        {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch      {}", torch.libtorch);
    println!("CUDA          {}", if torch.cuda_available { "available" } else { "not available" });
    println!("CUDA devices  {}", torch.cuda_devices);
    for (i, name) in torch.gpu_names.iter().enumerate() {
        let memory = runtime::device_memory(tch::Device::Cuda(i)).map_or(String::new(), |m| {
            format!(" ({:.1} GiB of {:.1} GiB in use)", runtime::gib(m.total - m.free), runtime::gib(m.total))
        });
        println!("  cuda:{i}      {name}{memory}");
    }
    match torch.cudnn {
        Some(version) => println!("cuDNN         available (version {version})"),
        None => println!("cuDNN         not available"),
    }
    println!(
        "CPU threads   {} (libtorch intra-op default {}; 1 per worker while training)",
        torch.cpus, torch.torch_threads
    );
    println!(
        "CPU kernels   {} (the machine has {}{})",
        runtime::cpu_capability(),
        runtime::cpu_vector_extensions(),
        if runtime::avx2_pinned() { "; pinned to AVX2" } else { "" }
    );
    let cifar = dirs.cifar10();
    let cifar_state = if prepare::is_complete(&cifar) {
        "prepared".to_owned()
    } else {
        "missing: run `fedsim data prepare`".to_owned()
    };
    println!("CIFAR-10      {} ({cifar_state})", cifar.display());
    let fashion = dirs.fashion_mnist.join("train-images-idx3-ubyte.gz");
    let fashion_state =
        if fashion.exists() { "found" } else { "missing: apt-get install dataset-fashion-mnist" };
    println!("Fashion-MNIST {} ({fashion_state})", dirs.fashion_mnist.display());
    let shared = PathBuf::from(prepare::SHARED_TARBALL);
    println!("CIFAR source  {} ({})", shared.display(), if shared.exists() { "found" } else { "not found" });
    Ok(())
}
