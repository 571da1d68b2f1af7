#[courier::service]
trait Upload {
    async fn upload(&self, chunks: courier::ResponseStream<Vec<u8>>) -> u64;
}

fn main() {}
