//! The machine fedsim runs on: which libtorch it linked, which device to train on, what CUDA
//! sees. `fedsim info` prints this; runs record it.

use std::fmt;
use std::str::FromStr;

use tch::{Cuda, Device};

/// libtorch's version as found at build time (e.g. `2.11.0+cu130`).
pub const LIBTORCH_VERSION: &str = env!("FEDSIM_LIBTORCH_VERSION");

/// Where to train: `auto` picks the first CUDA device when there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device '{0}'; valid devices: auto, cpu, cuda")]
    Unknown(String),
    #[error("libtorch refused fedsim's exact CPU square root, which the reproducible mode (run.cpu_kernels = \"avx2\") needs; run with run.cpu_kernels = \"native\" instead")]
    NoExactSqrt,
    #[error("device 'cuda' was asked for, but libtorch sees no CUDA device on this machine; ask for \"cpu\" or \"auto\" instead (run.device = \"cpu\" in a config, e.g. --set run.device=\"cpu\"; --device cpu for fedsim bench and train-central)")]
    NoCuda,
}

/// The process could not restart itself with what libtorch must read as it loads.
#[derive(Debug, thiserror::Error)]
#[error("restarting fedsim with {settings} set before libtorch loads")]
pub struct RestartError {
    settings: String,
    #[source]
    source: std::io::Error,
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            other => Err(DeviceError::Unknown(other.to_owned())),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
        })
    }
}

impl DeviceChoice {
    /// The device to train on; on a GPU this also switches libtorch to deterministic
    /// algorithms, so that results do not depend on kernel scheduling.
    pub fn resolve(self) -> Result<Device, DeviceError> {
        let device = match self {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Auto => Device::cuda_if_available(),
            DeviceChoice::Cuda if Cuda::is_available() => Device::Cuda(0),
            DeviceChoice::Cuda => return Err(DeviceError::NoCuda),
        };
        if device.is_cuda() {
            use_deterministic_algorithms();
            use_tf32(false);
        }
        if avx2_pinned() {
            // The reproducible mode's last pins, which are switches rather than variables.
            use_mkldnn(false);
            use_exact_sqrt()?;
        }
        Ok(device)
    }
}

extern "C" {
    fn fedsim_set_deterministic(on: std::ffi::c_int);
    fn fedsim_deterministic_algorithms() -> std::ffi::c_int;
    fn fedsim_set_tf32(on: std::ffi::c_int);
    fn fedsim_tf32_convolutions() -> std::ffi::c_int;
    fn fedsim_set_mkldnn(on: std::ffi::c_int);
    fn fedsim_mkldnn_enabled() -> std::ffi::c_int;
    fn fedsim_use_exact_sqrt() -> std::ffi::c_int;
    fn fedsim_cpu_capability(out: *mut std::ffi::c_char, len: std::ffi::c_int);
    fn fedsim_cuda_memory(
        device: std::ffi::c_int,
        free: *mut u64,
        total: *mut u64,
        allocated: *mut u64,
        peak_allocated: *mut u64,
        reserved: *mut u64,
    ) -> std::ffi::c_int;
    fn fedsim_cuda_reset_peak(device: std::ffi::c_int) -> std::ffi::c_int;
    fn fedsim_use_pool_stream(device: std::ffi::c_int) -> std::ffi::c_int;
    fn fedsim_sync_current_stream(device: std::ffi::c_int) -> std::ffi::c_int;
}

thread_local! {
    static OWN_STREAM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// On a GPU, gives the calling thread its own CUDA stream (once per thread), so that worker
/// threads' cohorts run concurrently; a no-op on CPU. Results do not depend on the stream.
pub fn use_own_stream(device: Device) {
    if let Device::Cuda(index) = device {
        if !OWN_STREAM.get() {
            // SAFETY: sets the thread's current stream in libtorch; fails with 1 without CUDA.
            let ok = unsafe { fedsim_use_pool_stream(index as std::ffi::c_int) } == 0;
            OWN_STREAM.set(ok);
        }
    }
}

/// On a GPU, blocks until the calling thread's current stream has run all its work, so that
/// what it wrote may be read on other streams and its inputs freed; a no-op on CPU, where
/// every operation has finished when it returns.
pub fn sync_current_stream(device: Device) {
    if let Device::Cuda(index) = device {
        // SAFETY: waits on libtorch's current stream; fails with 1 without CUDA (nothing to wait for).
        let _ = unsafe { fedsim_sync_current_stream(index as std::ffi::c_int) };
    }
}

/// A GPU's memory as the driver and libtorch's caching allocator see it, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    pub free: u64,
    pub total: u64,
    /// Held by live tensors now, and at most since the last [`reset_peak_memory`].
    pub allocated: u64,
    pub peak_allocated: u64,
    /// Held by the caching allocator (live tensors and cached blocks).
    pub reserved: u64,
}

/// The memory of `device`, or None on CPU (or where libtorch has no CUDA allocator).
pub fn device_memory(device: Device) -> Option<DeviceMemory> {
    let Device::Cuda(index) = device else { return None };
    let mut m = DeviceMemory { free: 0, total: 0, allocated: 0, peak_allocated: 0, reserved: 0 };
    // SAFETY: the C function writes five integers through valid pointers, or fails with 1.
    let failed = unsafe {
        fedsim_cuda_memory(
            index as std::ffi::c_int,
            &mut m.free,
            &mut m.total,
            &mut m.allocated,
            &mut m.peak_allocated,
            &mut m.reserved,
        )
    };
    (failed == 0).then_some(m)
}

/// Starts a new peak of [`DeviceMemory::peak_allocated`] (a no-op on CPU).
pub fn reset_peak_memory(device: Device) {
    if let Device::Cuda(index) = device {
        // SAFETY: resets counters of libtorch's allocator; failure (no CUDA) is ignored.
        let _ = unsafe { fedsim_cuda_reset_peak(index as std::ffi::c_int) };
    }
}

/// Bytes as GiB, for messages.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Deterministic kernels everywhere (cuDNN included); cuBLAS needs a fixed workspace for
/// that, which it reads when its first handle is made, so this runs before any GPU work.
pub fn use_deterministic_algorithms() {
    if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
    // SAFETY: plain C functions of csrc/determinism.cpp setting libtorch's global flags.
    unsafe { fedsim_set_deterministic(1) }
}

/// Replaces libtorch's CPU square root, for the rest of the process, with the CPU's
/// correctly rounded instruction (`csrc/ieee_sqrt.cpp`). libtorch's own goes through MKL's
/// vector math, which in MKL's COMPATIBLE branch approximates (16% of float results one ulp
/// off here) and rounds differently on other CPUs (an emulated AVX2 CPU), so Adam's steps
/// differed between machines.
pub fn use_exact_sqrt() -> Result<(), DeviceError> {
    // SAFETY: registers kernels with libtorch's dispatcher once; later calls return its status.
    match unsafe { fedsim_use_exact_sqrt() } {
        0 => Ok(()),
        _ => Err(DeviceError::NoExactSqrt),
    }
}

/// Whether libtorch may use oneDNN (mkldnn) kernels; off in the reproducible mode, as their
/// blocking, and so their rounding, follows the CPU's cache sizes.
pub fn use_mkldnn(on: bool) {
    // SAFETY: sets a global flag of libtorch.
    unsafe { fedsim_set_mkldnn(on as std::ffi::c_int) }
}

pub fn mkldnn_enabled() -> bool {
    // SAFETY: reads a global flag.
    unsafe { fedsim_mkldnn_enabled() != 0 }
}

/// Whether libtorch currently insists on deterministic algorithms.
pub fn deterministic_algorithms() -> bool {
    // SAFETY: reads a global flag.
    unsafe { fedsim_deterministic_algorithms() != 0 }
}

/// TF32 tensor cores for CUDA convolutions and matrix products (`true`), or IEEE float32
/// (`false`, what a GPU run uses: libtorch's own default is TF32 for convolutions, whose
/// 10-bit mantissa put a stacked client's delta 1.7e-2 (ConvNet) to 0.8 (ResNet-18) of its
/// scale from its delta alone on an H200, against 1e-4 in IEEE float32 on CPU). The
/// benchmarks' `--tf32` measures the alternative.
pub fn use_tf32(on: bool) {
    // SAFETY: sets global flags of libtorch.
    unsafe { fedsim_set_tf32(on as std::ffi::c_int) }
}

/// Whether CUDA convolutions may use TF32.
pub fn tf32_convolutions() -> bool {
    // SAFETY: reads a global flag.
    unsafe { fedsim_tf32_convolutions() != 0 }
}

/// How a device computes float32, for the benchmarks' headers.
pub fn math_mode(device: Device) -> &'static str {
    match (device.is_cuda(), tf32_convolutions()) {
        (false, _) => "",
        (true, true) => ", TF32",
        (true, false) => ", IEEE float32",
    }
}

/// The CPU kernels libtorch dispatches to, as it names them ("AVX2", "AVX512", ...).
pub fn cpu_capability() -> String {
    let mut buffer = [0 as std::ffi::c_char; 64];
    // SAFETY: writes at most 64 bytes, NUL-terminated, into the buffer.
    unsafe { fedsim_cpu_capability(buffer.as_mut_ptr(), buffer.len() as std::ffi::c_int) };
    // SAFETY: the shim always terminates the string.
    unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy().into_owned()
}

/// The host's vector extensions that change CPU results: "avx512" where it has AVX-512,
/// "avx2", or "baseline".
pub fn cpu_vector_extensions() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return "avx2";
        }
    }
    "baseline"
}

/// Environment variables that pin the CPU kernels of every library libtorch uses to code that
/// rounds alike on any x86-64 CPU with AVX2, Intel or AMD: ATen's own kernels to AVX2; MKL's
/// matrix products to its COMPATIBLE branch (MKL keeps a named branch such as AVX2 only on
/// Intel CPUs and falls back to its CPU-dependent AUTO dispatch elsewhere; measured: the AVX2
/// branch gave different hashes on an AMD EPYC and an Intel Xeon); oneDNN to AVX2, and its
/// convolutions off ([`use_mkldnn`]). They are read when the libraries start, so they must be
/// set before the process touches libtorch.
pub const AVX2_PINS: [(&str, &str); 4] = [
    ("ATEN_CPU_CAPABILITY", "avx2"),
    ("MKL_CBWR", "COMPATIBLE"),
    ("ONEDNN_MAX_CPU_ISA", "AVX2"),
    ("DNNL_MAX_CPU_ISA", "AVX2"),
];

/// Whether this process started with the AVX2 pins.
pub fn avx2_pinned() -> bool {
    AVX2_PINS.iter().all(|(key, value)| std::env::var(key).is_ok_and(|v| v == *value))
}

/// libgomp's wait policy for a process whose libtorch runs more than one thread: idle OpenMP
/// threads sleep at once instead of spinning for a while after each parallel region, on cores
/// the training workers (or other fedsim processes) need. Measured on 2 cores (README, Server
/// threads): two FedRevive runs side by side 2.4 times as fast; a run alone 82 s on average
/// against 95 s, and steadier. Same final weights: the policy decides how threads wait, not
/// how work is split.
pub const PASSIVE_WAIT: (&str, &str) = ("OMP_WAIT_POLICY", "PASSIVE");

/// The OpenMP wait policy this process started with (None: libgomp's default).
pub fn omp_wait_policy() -> Option<String> {
    std::env::var(PASSIVE_WAIT.0).ok()
}

/// Makes sure what libtorch's libraries read when they load is in this process's environment:
/// the AVX2 pins where they are asked for, and the passive wait policy where libtorch will run
/// more than one thread and the environment names no policy (one it names is kept). Where
/// something is missing this restarts the process with it and returns only if that fails.
/// Call before anything touches libtorch.
pub fn restart_unless_set_for_libtorch(pin_avx2: bool, server_threads: usize) -> Result<(), RestartError> {
    let mut missing = Vec::new();
    if pin_avx2 && !avx2_pinned() {
        missing.extend(AVX2_PINS);
    }
    if server_threads > 1 && omp_wait_policy().is_none() {
        missing.push(PASSIVE_WAIT);
    }
    if missing.is_empty() {
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let program = std::env::current_exe().map_or(argv0, Into::into);
    let error = std::process::Command::new(program).args(args).envs(missing.iter().copied()).exec();
    let pairs: Vec<String> = missing.iter().map(|(key, value)| format!("{key}={value}")).collect();
    Err(RestartError { settings: pairs.join(" "), source: error })
}

/// A device in words, e.g. `cpu` or `cuda:0 (NVIDIA H100 80GB HBM3)`.
/// The host's CPU, e.g. "AMD EPYC, 2 threads" (model from /proc/cpuinfo where there is one).
pub fn host_cpu() -> String {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{model}, {threads} thread{}", if threads == 1 { "" } else { "s" })
}

pub fn describe(device: Device) -> String {
    match device {
        Device::Cuda(i) => {
            let name = gpu_names().get(i).cloned().unwrap_or_else(|| "unknown GPU".to_owned());
            format!("cuda:{i} ({name})")
        }
        _ => "cpu".to_owned(),
    }
}

/// GPU model names from the NVIDIA driver (libtorch does not expose them through tch).
pub fn gpu_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|gpu| std::fs::read_to_string(gpu.path().join("information")).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_owned())))
        .collect();
    if names.is_empty() {
        if let Ok(out) = std::process::Command::new("nvidia-smi")
            .args(["--query-gpu=name", "--format=csv,noheader"])
            .output()
        {
            names = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect();
        }
    }
    names
}

/// Facts about libtorch and CUDA, as `fedsim info` prints them.
pub struct TorchInfo {
    pub libtorch: &'static str,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub gpu_names: Vec<String>,
    pub cudnn: Option<i64>,
    pub torch_threads: i32,
    pub cpus: usize,
}

impl TorchInfo {
    pub fn gather() -> Self {
        let cuda_available = Cuda::is_available();
        TorchInfo {
            libtorch: LIBTORCH_VERSION,
            cuda_available,
            cuda_devices: if cuda_available { Cuda::device_count() } else { 0 },
            gpu_names: if cuda_available { gpu_names() } else { Vec::new() },
            cudnn: Cuda::cudnn_is_available().then(tch::utils::version_cudnn),
            torch_threads: tch::get_num_threads(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libtorch's default is TF32 for CUDA convolutions; the switch must reach its flag both
    /// ways (it is a map entry libtorch keeps on CPU-only builds too).
    #[test]
    fn the_tf32_switch_sets_libtorchs_convolution_precision() {
        use_tf32(true);
        assert!(tf32_convolutions());
        use_tf32(false);
        assert!(!tf32_convolutions());
        assert_eq!(math_mode(Device::Cpu), "");
        assert_eq!(math_mode(Device::Cuda(0)), ", IEEE float32");
    }

    #[test]
    fn the_onednn_switch_reaches_libtorch() {
        assert!(mkldnn_enabled(), "libtorch's default");
        use_mkldnn(false);
        assert!(!mkldnn_enabled());
    }

    #[test]
    fn the_exact_sqrt_is_correctly_rounded_in_every_form() {
        use tch::{Kind, Tensor};
        use_exact_sqrt().unwrap();
        use_exact_sqrt().unwrap();
        // Squares of normals over 24 binary decades, so that every rounding case comes up
        // (libtorch's own sqrt, through MKL, fails this here).
        let n = 100_000;
        let x = Tensor::randn([n], (Kind::Float, Device::Cpu)).square()
            * Tensor::randint(24, [n], (Kind::Float, Device::Cpu)).multiply_scalar(-1.0).exp2();
        let expected: Vec<f32> =
            Vec::<f32>::try_from(&x).unwrap().iter().map(|&v| (v as f64).sqrt() as f32).collect();
        let check = |t: &Tensor, how: &str| {
            assert_eq!(Vec::<f32>::try_from(&t.contiguous()).unwrap(), expected, "{how}");
        };
        check(&x.sqrt(), "functional");
        check(&x.copy().sqrt_(), "in place");
        check(&x.sqrt_out(&Tensor::empty([0], (Kind::Float, Device::Cpu))), "into a resized tensor");
        let strided = Tensor::stack(&[&x, &x], 1);
        check(&strided.select(1, 1).sqrt(), "from a strided view");
        check(&x.to_kind(Kind::Double).sqrt().to_kind(Kind::Float), "doubles (rounded once more)");
        let roots = Tensor::from_slice(&[4i64, 9]).sqrt();
        assert_eq!((roots.kind(), Vec::<f32>::try_from(&roots).unwrap()), (Kind::Float, vec![2.0, 3.0]));
        let w = Tensor::from_slice(&[4.0f32]).set_requires_grad(true);
        w.sqrt().backward();
        assert_eq!(Vec::<f32>::try_from(&w.grad()).unwrap(), vec![0.25], "d sqrt(w) / dw at 4");
    }

    #[test]
    fn the_determinism_switch_reaches_libtorch() {
        use_deterministic_algorithms();
        assert!(deterministic_algorithms());
        assert_eq!(std::env::var("CUBLAS_WORKSPACE_CONFIG").as_deref(), Ok(":4096:8"));
    }

    #[test]
    fn the_cpu_has_no_device_memory_and_a_missing_gpu_reports_none() {
        assert_eq!(device_memory(Device::Cpu), None);
        if !Cuda::is_available() {
            assert_eq!(device_memory(Device::Cuda(0)), None, "no CUDA allocator: no figures, no crash");
        }
        reset_peak_memory(Device::Cpu);
    }

    #[test]
    fn device_names_parse_and_unknown_ones_are_listed() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap().resolve().unwrap(), Device::Cpu);
        let err = "tpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("valid devices: auto, cpu, cuda"), "{err}");
    }
}
