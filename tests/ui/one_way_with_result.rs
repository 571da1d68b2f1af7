#[courier::service]
trait Events {
    #[courier(one_way)]
    async fn publish(&self, event: String) -> bool;
}

fn main() {}
