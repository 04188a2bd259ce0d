//! The precision a run computes in (`run.precision`). fp32 (the default) runs every operation
//! in float32. bf16 is autocast, as PyTorch's `torch.autocast(dtype=torch.bfloat16)`: inside a
//! forward pass, convolutions and matrix products cast their inputs to bfloat16 and compute
//! there (AVX-512 BF16 or AMX units on CPU, tensor cores on a GPU); weights, gradients,
//! optimizer state, deltas and aggregation stay float32, and every forward pass hands back
//! float32 scores, so losses, softmaxes and tracker statistics are float32 too.
//!
//! bf16 is deterministic as fp32 is: the same bits for any worker count and on resume, on one
//! kind of machine. Across machines it promises less than fp32's reproducible mode: oneDNN
//! picks its bf16 kernels by the CPU's units (AVX-512 BF16, AMX), so two CPU models may round
//! differently; only fp32 with `run.cpu_kernels = "avx2"` gives one result on every x86-64 CPU.

use tch::{Device, Kind, Tensor};

/// `run.precision`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

/// bf16 asked for where it has no hardware to run on.
#[derive(Debug, thiserror::Error)]
#[error("run.precision = \"bf16\": {0}; use run.precision = \"fp32\" here")]
pub struct Unsupported(pub String);

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Runs `f` (forward passes) in this precision. bf16 turns autocast on for `device` on
    /// the calling thread for the length of `f` (autocast state is per thread).
    pub fn run<T>(self, device: Device, f: impl FnOnce() -> T) -> T {
        match self {
            Precision::Fp32 => f(),
            Precision::Bf16 => {
                let _region = Autocast::enter(device);
                f()
            }
        }
    }

    /// A forward pass in this precision, its output in float32 (what losses take).
    pub fn forward(self, device: Device, f: impl FnOnce() -> Tensor) -> Tensor {
        match self {
            Precision::Fp32 => f(),
            Precision::Bf16 => self.run(device, f).to_kind(Kind::Float),
        }
    }

    /// Whether `device` can compute in this precision: bf16 needs a GPU, or a CPU with bf16
    /// units (AVX-512 BF16 or AMX); without them libtorch emulates bf16 in float32 code paths,
    /// slower than fp32 and for nothing.
    pub fn check(self, device: Device) -> Result<(), Unsupported> {
        match (self, device) {
            (Precision::Fp32, _) | (Precision::Bf16, Device::Cuda(_)) => Ok(()),
            (Precision::Bf16, _) if cpu_has_bf16_units() => Ok(()),
            (Precision::Bf16, _) => Err(Unsupported(
                "this CPU has no bf16 units (neither AVX-512 BF16 nor AMX, per /proc/cpuinfo)".into(),
            )),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this CPU computes bf16 in hardware: the `avx512_bf16` or `amx_bf16` flag in
/// /proc/cpuinfo (false where the file cannot be read).
pub fn cpu_has_bf16_units() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| has_bf16_flag(&info))
}

fn has_bf16_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .any(|line| line.split_whitespace().any(|flag| flag == "avx512_bf16" || flag == "amx_bf16"))
}

extern "C" {
    fn fedsim_autocast_enter(cuda: std::ffi::c_int) -> std::ffi::c_int;
    fn fedsim_autocast_exit(cuda: std::ffi::c_int, before: std::ffi::c_int);
}

/// bf16 autocast on one thread, on until dropped (also when the forward pass panics).
struct Autocast {
    cuda: std::ffi::c_int,
    before: std::ffi::c_int,
}

impl Autocast {
    fn enter(device: Device) -> Autocast {
        let cuda = std::ffi::c_int::from(device.is_cuda());
        // SAFETY: sets libtorch's thread-local autocast switches; returns the earlier state.
        let before = unsafe { fedsim_autocast_enter(cuda) };
        Autocast { cuda, before }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: restores what `enter` found and clears autocast's cast-weight cache.
        unsafe { fedsim_autocast_exit(self.cuda, self.before) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_units_are_read_from_the_flags_line() {
        assert!(has_bf16_flag("processor : 0\nflags : fpu avx2 avx512f avx512_bf16 sse\n"));
        assert!(has_bf16_flag("flags\t\t: fpu amx_bf16 amx_tile\n"));
        assert!(
            !has_bf16_flag("flags : fpu avx2 avx512f\nbugs : avx512_bf16\n"),
            "only the flags line counts"
        );
        assert!(!has_bf16_flag("flags : avx512_bf16x\n"), "whole flags only");
    }

    #[test]
    fn fp32_is_accepted_everywhere_and_bf16_only_with_units() {
        assert!(Precision::Fp32.check(Device::Cpu).is_ok());
        assert!(Precision::Bf16.check(Device::Cuda(0)).is_ok());
        match Precision::Bf16.check(Device::Cpu) {
            Ok(()) => assert!(cpu_has_bf16_units()),
            Err(e) => {
                assert!(!cpu_has_bf16_units());
                assert!(e.to_string().contains("run.precision"), "{e}");
            }
        }
    }

    #[test]
    fn bf16_computes_convolutions_in_bf16_and_hands_back_fp32() {
        let xs = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let weight = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        let conv = || xs.conv2d(&weight, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        let fp32 = Precision::Fp32.forward(Device::Cpu, conv);
        let inside = Precision::Bf16.run(Device::Cpu, conv);
        let bf16 = Precision::Bf16.forward(Device::Cpu, conv);
        assert_eq!(fp32.kind(), Kind::Float);
        assert_eq!(inside.kind(), Kind::BFloat16, "autocast casts a convolution to bf16");
        assert_eq!(bf16.kind(), Kind::Float, "forward hands back float32");
        assert_eq!(conv().kind(), Kind::Float, "autocast is off again after the region");
        let error = (&bf16 - &fp32).abs().max().double_value(&[]);
        let scale = fp32.abs().max().double_value(&[]);
        assert!(
            error > 0.0 && error < 0.05 * scale,
            "bf16 rounds, within bf16's precision: {error} of {scale}"
        );
    }
}
