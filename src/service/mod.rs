//! The use cases every channel calls (HTTP today; webhooks, a queue and the CLI next): routing
//! tickets end to end. A channel turns its input into a request, calls a service and turns the
//! result into its own output; no channel re-wires the stages.

pub mod route;

pub use route::{RouteError, RoutePolicy, RouteService};
