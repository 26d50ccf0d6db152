#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    queue_worker::lambda::run_worker(import_processor::production_worker).await
}
