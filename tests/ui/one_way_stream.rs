#[courier::service]
trait Sink {
    #[courier(one_way)]
    async fn push(&self, items: courier::Streaming<u64>);
}

fn main() {}
