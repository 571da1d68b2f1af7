#[courier::service]
trait Feed {
    async fn updates(&self, topic: String) -> courier::Streaming<String>;
}

fn main() {}
