//! The Kubernetes CRI API (`runtime.v1`): types and gRPC clients generated once from
//! cri-api's `api.proto` (as the `k8s-cri` 0.11 crate ships it, cri-api 7d8ade9) by
//! `tonic-prost-build` 0.14 with serde derives, and committed in `proto/runtime.v1.rs`, so
//! that building bulkhead needs no `protoc`. To regenerate: build `k8s-cri` 0.11 and copy
//! its `OUT_DIR/runtime.v1.rs` here.

#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

include!("proto/runtime.v1.rs");
