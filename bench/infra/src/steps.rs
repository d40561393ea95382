//! How far a long step is, told to whoever listens: a progress bar in the command line, nothing
//! by default. The infrastructure never draws anything itself.

use std::fmt;
use std::sync::Arc;

/// What a long step reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// `done` of `total` parts are done; the last one was `what`.
    Done { done: u64, total: u64, what: &'a str },
    /// The step is over (done or failed): whatever shows it can go.
    Finished,
}

type Listener = Arc<dyn Fn(Step<'_>) + Send + Sync>;

/// A listener for a long step's [`Step`]s; the default listens to nothing.
#[derive(Clone, Default)]
pub struct OnStep(Option<Listener>);

impl OnStep {
    pub fn new(f: impl Fn(Step<'_>) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }
    pub fn tell(&self, step: Step<'_>) {
        if let Some(f) = &self.0 {
            f(step)
        }
    }
}

impl fmt::Debug for OnStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "OnStep(listening)" } else { "OnStep(none)" })
    }
}
