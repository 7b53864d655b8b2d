//! Generates etcd's v3 protobuf messages (no services: those live in kvlab-etcd, which
//! refers to these types) from the `.proto` files vendored in `node/etcd/proto`, with
//! protox (pure Rust: no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../etcd/proto";
    for f in ["rpc.proto", "kv.proto", "auth.proto"] {
        println!("cargo:rerun-if-changed={dir}/{f}");
    }
    let fds = protox::compile(["rpc.proto"], [dir])?;
    prost_build::Config::new()
        .disable_comments(["."])
        .compile_fds(fds)?;
    Ok(())
}
