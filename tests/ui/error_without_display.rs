#[derive(serde::Serialize, serde::Deserialize)]
enum LookupError {
    Missing,
}

#[courier::service]
trait Directory {
    async fn lookup(&self, name: String) -> Result<String, LookupError>;
}

fn main() {}
