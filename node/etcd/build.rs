//! Generates the gRPC services (`KV`, `Cluster`, `Maintenance`; servers, and clients for
//! tests and tools) of etcd's `rpc.proto`, vendored in `proto/`, with tonic and protox
//! (pure Rust: no `protoc` needed). The messages are kvlab-node's (`kvlab_node::etcd::pb`): the replicated state machine
//! applies the very types the services carry.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in ["rpc.proto", "kv.proto", "auth.proto"] {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    let fds = protox::compile(["rpc.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .disable_comments(["."])
        .extern_path(".etcdserverpb", "::kvlab_node::etcd::pb::etcdserverpb")
        .extern_path(".mvccpb", "::kvlab_node::etcd::pb::mvccpb")
        .extern_path(".authpb", "::kvlab_node::etcd::pb::authpb")
        .compile_fds(fds)?;
    Ok(())
}
