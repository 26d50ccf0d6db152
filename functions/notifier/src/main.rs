#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    queue_worker::lambda::run_worker(notifier::production_worker).await
}
