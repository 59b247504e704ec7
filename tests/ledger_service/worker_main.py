"""`blackbox worker` with the ledger agent attached, wired as the lead wires it in the CLI; the
end-to-end test runs this module as the worker process."""

from __future__ import annotations

from blackbox.settings import Settings
from blackbox.wiring import build_pipeline, open_archive, open_migrated_index, worker_config
from schemas import default_registry
from streams.app import build_app, run_worker
from streams.ledger_agent import attach_ledger, ledger_signer

LOG_NAME = "blackbox.test"


def main() -> None:
    settings = Settings()
    store = open_archive(settings)
    index = open_migrated_index(settings)
    registry = default_registry()
    pipeline = build_pipeline(settings, store, index, registry)
    app = build_app(worker_config(settings, settings.data_dir), pipeline, registry)
    signer = ledger_signer(settings.data_dir / "ledger" / "ledger.key", LOG_NAME, create=True)
    attach_ledger(
        app,
        sealed_topic=settings.sealed_topic,
        store=store,
        signer=signer,
        log_name=LOG_NAME,
        epoch=settings.source_epoch,
        checkpoint_interval_seconds=1.0,
        idle_checkpoint_seconds=30.0,
    )
    try:
        run_worker(app, loglevel=settings.log_level)
    finally:
        pipeline.close()
        index.close()


if __name__ == "__main__":
    main()
