//! Endpoint sources: each learns endpoints, services and policies its own way and sends the
//! model [`crate::model::Change`]s. A source knows nothing of the datapath or of flows.
//!
//! - [`lab`]: a lab spec file (and the pods `lab add-pod` adds to a running lab).
//! - [`policy_files`]: CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy files in a
//!   directory (`run --policy-dir`).
//! - [`host`]: the machine the agent runs on (node name and addresses), without a lab.
//! - [`containerd`]: containerd's containers and Kubernetes pods (CRI), followed live.
//! - [`docker`]: the Docker Engine's containers, followed live.
//! - [`netns`]: a container's veth and addresses, read from its netns (containerd, docker).
//! - [`endpoints`]: the endpoint diff, DNS visibility and skip reports they share.
//! - [`netlink`]: rtnetlink dumps of links and addresses, shared by the host sources.

pub mod containerd;
pub mod docker;
pub mod endpoints;
pub mod host;
pub mod lab;
pub mod netlink;
pub mod netns;
pub mod policy_files;

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;

use crate::model::Change;

/// A source's watcher: started inside the agent's runtime with the model's channel, it
/// sends batches of changes until the channel closes.
pub type Watcher =
    Box<dyn FnOnce(mpsc::Sender<Vec<Change>>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;
