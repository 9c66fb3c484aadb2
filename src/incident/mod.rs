//! Incidents: systemic problems seen in the stream of routed tickets. The detector raises alarms
//! on intents, languages and near-duplicate groups; vectors and statistics serve it. Knows no
//! HTTP and no storage.

pub mod detect;
pub mod report;
pub mod stats;
pub mod track;
pub mod vector;
pub mod words;

pub use detect::{Alarm, Detector, DetectorSettings, Observation, Stream};
pub use track::{Change, Link, TrackedIncident, Tracker};
pub use vector::Embedding;
