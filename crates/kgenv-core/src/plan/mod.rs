//! The step engine: the [`Step`] trait, the context steps run in ([`StepCtx`]), the DAG
//! executor and the [`Event`]s a run streams. Generic over steps: it imports none of them
//! (kgenv's steps are in [`crate::steps`], and [`crate::runner`] puts the two together).
//!
//! The engine drives the selected steps four ways ([`drive`]): observe (`plan`), converge
//! (`up`: a second run finds every step satisfied and makes no mutating call), tear down
//! (`down`: dependents first, only what the state file says kgenv created) and stop
//! (`stop`). Cancelling lets running steps finish, so the state file stays consistent.

pub mod drive;
mod events;
mod executor;
mod remote;
mod step;

pub use drive::{DownPreview, Report, StepTeardown};
pub use events::{Change, Event, EventSink, Phase};
pub use executor::{Outcome, StepOutcome};
pub use step::{
    CapacityWait, CheckOutcome, ConfirmFn, Destroyed, Disruption, HostLocator, Observed, Step,
    StepCtx, Teardown, DEFAULT_COMMAND_TIMEOUT,
};
