struct Point {
    x: i32,
    y: i32,
}

#[courier::service]
trait Geometry {
    async fn distance(&self, from: Point, to: Point) -> f64;
}

fn main() {}
