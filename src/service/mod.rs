//! The use cases every channel calls (HTTP today; webhooks, a queue and the CLI next): routing
//! tickets end to end, and long operations as jobs. A channel turns its input into a request, calls a service and turns the
//! result into its own output; no channel re-wires the stages.

pub mod connectors;
pub mod erasure;
pub mod feedback;
pub mod incidents;
pub mod jobs;
pub mod route;

pub use connectors::{ConnectorError, ConnectorService};
pub use erasure::{ErasureError, ErasureService};
pub use feedback::{FeedbackError, FeedbackService};
pub use incidents::{IncidentPolicy, IncidentService};
pub use jobs::{Jobs, JobsError};
pub use route::{RouteError, RoutePolicy, RouteService};
