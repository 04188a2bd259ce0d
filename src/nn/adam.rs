//! An Adam optimizer whose state can be saved and put back. It is libtorch's own Adam, made
//! through the same C call tch uses (so its steps are the floats tch's `nn::Adam` gives), with
//! a few lines of C++ (`csrc/adam_state.cpp`) that read and write its per-parameter state:
//! FedRevive's persistent generator is trained by one across the whole run, and a resumed
//! run must continue it exactly.

use super::NnError;
use std::ffi::{c_char, c_int, c_void, CStr};

use tch::{nn::VarStore, Tensor};
use torch_sys::{C_optimizer, C_tensor};

use crate::saved::{Array, SavedState};

extern "C" {
    fn fedsim_adam_parameters(optimizer: *mut C_optimizer) -> i64;
    fn fedsim_adam_get(
        optimizer: *mut C_optimizer,
        index: i64,
        step: *mut i64,
        exp_avg: *mut *mut C_tensor,
        exp_avg_sq: *mut *mut C_tensor,
    ) -> c_int;
    fn fedsim_adam_set(
        optimizer: *mut C_optimizer,
        index: i64,
        step: i64,
        exp_avg: *const C_tensor,
        exp_avg_sq: *const C_tensor,
    ) -> c_int;
    fn free(pointer: *mut c_void);
}

/// libtorch's Adam over a var store's trainable variables.
pub struct SavableAdam {
    optimizer: *mut C_optimizer,
    parameters: Vec<Tensor>,
}

// The optimizer is used from one thread at a time (the server's), like tch's own.
unsafe impl Send for SavableAdam {}

/// libtorch's last error, if a call left one.
fn last_error() -> Result<(), NnError> {
    unsafe {
        let message = torch_sys::get_and_reset_last_err();
        if message.is_null() {
            return Ok(());
        }
        let text = CStr::from_ptr(message as *const c_char).to_string_lossy().into_owned();
        free(message as *mut c_void);
        Err(NnError::Libtorch(text))
    }
}

impl SavableAdam {
    /// Adam with betas (beta1, beta2), eps 1e-8 and no weight decay (tch's defaults) over the
    /// trainable variables of `vs`, in their order.
    pub fn new(vs: &VarStore, lr: f64, beta1: f64, beta2: f64) -> Result<Self, NnError> {
        let optimizer = unsafe { torch_sys::ato_adam(lr, beta1, beta2, 0.0, 1e-8, false) };
        last_error()?;
        let mut adam = SavableAdam { optimizer, parameters: vs.trainable_variables() };
        for parameter in &mut adam.parameters {
            unsafe { torch_sys::ato_add_parameters(optimizer, parameter.as_mut_ptr(), 0) };
            last_error()?;
        }
        Ok(adam)
    }

    /// Zeroes the gradients, back-propagates `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<(), NnError> {
        unsafe { torch_sys::ato_zero_grad(self.optimizer) };
        last_error()?;
        loss.backward();
        unsafe { torch_sys::ato_step(self.optimizer) };
        last_error()
    }

    /// Every parameter's step count and moment estimates (none for a parameter never stepped).
    pub fn save(&self) -> Result<SavedState, NnError> {
        let mut state = SavedState::default();
        let count = unsafe { fedsim_adam_parameters(self.optimizer) };
        let mut steps = Vec::with_capacity(count as usize);
        for index in 0..count {
            let (mut step, mut exp_avg, mut exp_avg_sq) = (0i64, std::ptr::null_mut(), std::ptr::null_mut());
            let found =
                unsafe { fedsim_adam_get(self.optimizer, index, &mut step, &mut exp_avg, &mut exp_avg_sq) };
            if found < 0 {
                return Err(NnError::Libtorch(format!("reading the state of Adam's parameter {index}")));
            }
            if found == 0 {
                steps.push(None);
                continue;
            }
            steps.push(Some(step));
            // The C++ side made these copies for us to own.
            let (exp_avg, exp_avg_sq) = unsafe { (Tensor::from_ptr(exp_avg), Tensor::from_ptr(exp_avg_sq)) };
            state.put_array(format!("{index}.exp_avg"), host_array(&exp_avg)?);
            state.put_array(format!("{index}.exp_avg_sq"), host_array(&exp_avg_sq)?);
        }
        state.put_value("steps", steps)?;
        Ok(state)
    }

    /// Puts back what [`SavableAdam::save`] gave, into an optimizer over the same variables.
    pub fn restore(&mut self, mut state: SavedState) -> Result<(), NnError> {
        let steps: Vec<Option<i64>> = state.value("steps")?;
        crate::saved::ensure(steps.len() == self.parameters.len(), || {
            format!(
                "the checkpoint's Adam state has {} parameters, the optimizer {}",
                steps.len(),
                self.parameters.len()
            )
        })?;
        for (index, step) in steps.into_iter().enumerate() {
            let Some(step) = step else { continue };
            let mut tensor = |name: &str| -> Result<Tensor, NnError> {
                let size = self.parameters[index].size();
                let values = state.take_f32(&format!("{index}.{name}"), self.parameters[index].numel())?;
                Ok(Tensor::from_slice(&values).view(size.as_slice()))
            };
            let (exp_avg, exp_avg_sq) = (tensor("exp_avg")?, tensor("exp_avg_sq")?);
            let done = unsafe {
                fedsim_adam_set(self.optimizer, index as i64, step, exp_avg.as_ptr(), exp_avg_sq.as_ptr())
            };
            if done != 0 {
                return Err(NnError::Libtorch(format!("restoring the state of Adam's parameter {index}")));
            }
        }
        Ok(())
    }
}

impl Drop for SavableAdam {
    fn drop(&mut self) {
        unsafe { torch_sys::ato_free(self.optimizer) };
    }
}

/// A float tensor's values on the host, with its shape.
pub fn host_array(tensor: &Tensor) -> Result<Array, NnError> {
    let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
    let flat = tensor.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous().view(-1);
    Ok(Array::F32 { shape, data: Vec::<f32>::try_from(&flat)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, nn::OptimizerConfig, Device, Kind};

    fn store(values: &[f32]) -> (VarStore, Tensor) {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(values));
        (vs, w)
    }

    fn loss(w: &Tensor) -> Tensor {
        (w * w).sum(Kind::Float) + w.sum(Kind::Float)
    }

    #[test]
    fn steps_equal_tch_adam_and_a_restored_optimizer_continues_exactly() {
        let start = [0.5f32, -1.0, 2.0];
        // tch's own Adam, five steps.
        let (vs, w) = store(&start);
        let mut reference =
            nn::Adam { beta1: 0.5, beta2: 0.999, ..Default::default() }.build(&vs, 0.1).unwrap();
        for _ in 0..5 {
            reference.backward_step(&loss(&w));
        }
        let expected = Vec::<f32>::try_from(&w).unwrap();
        // Ours: two steps, save, then a fresh optimizer restored from the save takes three.
        let (vs, w) = store(&start);
        let mut adam = SavableAdam::new(&vs, 0.1, 0.5, 0.999).unwrap();
        assert!(adam.save().unwrap().arrays.is_empty(), "no state before the first step");
        for _ in 0..2 {
            adam.backward_step(&loss(&w)).unwrap();
        }
        let saved = adam.save().unwrap();
        drop(adam);
        let mut resumed = SavableAdam::new(&vs, 0.1, 0.5, 0.999).unwrap();
        resumed.restore(saved).unwrap();
        for _ in 0..3 {
            resumed.backward_step(&loss(&w)).unwrap();
        }
        assert_eq!(Vec::<f32>::try_from(&w).unwrap(), expected);
    }

    #[test]
    fn a_state_of_another_shape_is_refused() {
        let (vs, w) = store(&[1.0, 2.0]);
        let mut adam = SavableAdam::new(&vs, 0.1, 0.9, 0.999).unwrap();
        adam.backward_step(&loss(&w)).unwrap();
        let saved = adam.save().unwrap();
        let (other, _) = store(&[1.0, 2.0, 3.0]);
        let mut wrong = SavableAdam::new(&other, 0.1, 0.9, 0.999).unwrap();
        assert!(wrong.restore(saved).unwrap_err().to_string().contains("2 values where 3"));
    }
}
