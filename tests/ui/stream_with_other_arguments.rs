#[courier::service]
trait Chat {
    async fn chat(&self, room: String, messages: courier::Streaming<String>) -> courier::ResponseStream<String>;
}

fn main() {}
