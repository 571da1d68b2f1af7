#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct NotFound;

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not found")
    }
}

#[courier::service]
trait Feed {
    async fn updates(&self, topic: String) -> Result<courier::ResponseStream<String>, NotFound>;
}

fn main() {}
