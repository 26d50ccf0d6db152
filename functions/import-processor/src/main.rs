use import_processor::{ProcessorConfig, build, handle_batch};
use lambda_runtime::{Error, run, service_fn};
use queue_worker::Env;
use queue_worker::aws::load_sdk_config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    queue_worker::telemetry::init();
    let env = Env::from_process();
    let config = ProcessorConfig::from_env(&env)?;
    let processor = build(&config, &load_sdk_config(&env).await?);
    run(service_fn(|event| handle_batch(&processor, event))).await
}
