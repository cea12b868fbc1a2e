//! containerd's own event stream (not CRI): `containerd.services.events.v1.Events/Subscribe`
//! filtered to the `/tasks/exit` topic, so a container's end is known the moment its task
//! exits rather than at the next poll.
//!
//! The messages are written out by hand, field for field, from containerd's
//! `api/services/events/v1/events.proto` and `api/events/task.proto` (the same field numbers
//! in containerd 1.6, 1.7 and 2.x); three messages do not justify a protoc step.

use std::path::Path;

use prost::Message;
use tonic::codec::Streaming;
use tonic::codegen::http::uri::PathAndQuery;

use super::client::{CriError, unix_channel};

/// The topic of a task's (or an exec's) end.
pub const TOPIC_TASK_EXIT: &str = "/tasks/exit";

/// `containerd.services.events.v1.SubscribeRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct SubscribeRequest {
    /// containerd filter expressions; any one matching lets an event through.
    #[prost(string, repeated, tag = "1")]
    pub filters: Vec<String>,
}

/// `containerd.services.events.v1.Envelope`.
#[derive(Clone, PartialEq, Message)]
pub struct Envelope {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<prost_types::Timestamp>,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub topic: String,
    #[prost(message, optional, tag = "4")]
    pub event: Option<prost_types::Any>,
}

/// `containerd.events.TaskExit`.
#[derive(Clone, PartialEq, Message)]
pub struct TaskExit {
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// The process: the container id for the task's init process, an exec id otherwise.
    #[prost(string, tag = "2")]
    pub id: String,
    #[prost(uint32, tag = "3")]
    pub pid: u32,
    #[prost(uint32, tag = "4")]
    pub exit_status: u32,
    #[prost(message, optional, tag = "5")]
    pub exited_at: Option<prost_types::Timestamp>,
}

/// The subscription filter: task exits in one containerd namespace (`k8s.io` for CRI).
pub fn filter(namespace: &str) -> String {
    format!("topic==\"{TOPIC_TASK_EXIT}\",namespace==\"{namespace}\"")
}

/// The container whose main process ended, if `e` says one did. Exec ends, other
/// topics, other namespaces and undecodable bodies give `None`.
pub fn container_exit(e: &Envelope, namespace: &str) -> Option<TaskExit> {
    if e.topic != TOPIC_TASK_EXIT || e.namespace != namespace {
        return None;
    }
    let x = TaskExit::decode(e.event.as_ref()?.value.as_slice()).ok()?;
    (!x.container_id.is_empty() && x.id == x.container_id).then_some(x)
}

/// Subscribes to task exits of `namespace` on containerd's socket. `on_sent` runs once the
/// connection stands and the request goes out: containerd answers with the first event, not
/// before, so the call itself returns only then. Fails when the socket is unreachable or the
/// endpoint has no events service (CRI-O, most CRI shims).
pub async fn subscribe(
    socket: &Path,
    namespace: &str,
    on_sent: impl FnOnce(),
) -> Result<Streaming<Envelope>, CriError> {
    let channel = unix_channel(socket).await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| CriError::Connect {
        path: socket.display().to_string(),
        reason: e.to_string(),
    })?;
    let req = tonic::Request::new(SubscribeRequest {
        filters: vec![filter(namespace)],
    });
    let path = PathAndQuery::from_static("/containerd.services.events.v1.Events/Subscribe");
    let call = grpc.server_streaming(req, path, tonic_prost::ProstCodec::default());
    on_sent();
    call.await
        .map(tonic::Response::into_inner)
        .map_err(|status| CriError::Call {
            call: "Events/Subscribe",
            status: Box::new(status),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(topic: &str, ns: &str, exit: &TaskExit) -> Envelope {
        Envelope {
            timestamp: None,
            namespace: ns.into(),
            topic: topic.into(),
            event: Some(prost_types::Any {
                type_url: "containerd.events.TaskExit".into(),
                value: exit.encode_to_vec(),
            }),
        }
    }

    fn exit(container: &str, process: &str) -> TaskExit {
        TaskExit {
            container_id: container.into(),
            id: process.into(),
            pid: 42,
            exit_status: 137,
            exited_at: None,
        }
    }

    #[test]
    fn only_a_main_process_exit_in_our_namespace_counts() {
        let main = exit("c1", "c1");
        let got = container_exit(&envelope(TOPIC_TASK_EXIT, "k8s.io", &main), "k8s.io");
        assert_eq!(
            got.map(|x| (x.container_id, x.exit_status)),
            Some(("c1".into(), 137))
        );
        // an exec inside c1 ended: the container still runs
        assert!(
            container_exit(
                &envelope(TOPIC_TASK_EXIT, "k8s.io", &exit("c1", "exec-7")),
                "k8s.io"
            )
            .is_none()
        );
        // another namespace, another topic
        assert!(container_exit(&envelope(TOPIC_TASK_EXIT, "moby", &main), "k8s.io").is_none());
        assert!(container_exit(&envelope("/tasks/oom", "k8s.io", &main), "k8s.io").is_none());
        // a body that is not a TaskExit
        let mut bad = envelope(TOPIC_TASK_EXIT, "k8s.io", &main);
        bad.event.as_mut().unwrap().value = vec![0xff, 0xff, 0xff];
        assert!(container_exit(&bad, "k8s.io").is_none());
        bad.event = None;
        assert!(container_exit(&bad, "k8s.io").is_none());
    }

    #[test]
    fn the_filter_is_one_conjunction() {
        assert_eq!(
            filter("k8s.io"),
            r#"topic=="/tasks/exit",namespace=="k8s.io""#
        );
    }
}
