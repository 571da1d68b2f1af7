struct Opaque;

#[courier::service]
trait Upload {
    async fn upload(&self, chunks: courier::Streaming<Opaque>) -> u64;
}

fn main() {}
