//! The config file's sections, one file each: the table as written (every key optional, with
//! the reference's default where it has one; serde rejects unknown keys) and beside it the
//! checks that turn it into validated values, each message naming its key and what is allowed.
//! Checks that span sections are in `validate.rs`.

mod algorithm;
mod data;
mod distillation;
mod run;
mod stop;
mod train;
mod world;

pub use algorithm::*;
pub use data::*;
pub use distillation::*;
pub use run::*;
pub use stop::*;
pub use train::*;
pub use world::*;
