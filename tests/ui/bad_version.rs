#[courier::service(version = "one")]
trait Versioned {
    async fn ping(&self);
}

fn main() {}
