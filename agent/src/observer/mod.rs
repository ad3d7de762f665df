//! Hubble's server side in the agent: the flow ring, the local observer answering GetFlows /
//! ServerStatus / GetNamespaces from it, and the gRPC server (Observer, Peer, health, reflection).

pub mod entry;
pub mod events;
pub mod listen;
pub mod local;
pub mod peer;
pub mod ring;
pub mod run;
pub mod server;

pub use events::{AgentEvents, EventQuery, EventRequestError};
pub use local::{Encoded, Event, FlowQuery, LocalObserver, RequestError};
pub use ring::{DEFAULT_CAPACITY, Read, Ring, RingError};
pub use server::{Listeners, ServeError, ServeOptions, serve};
