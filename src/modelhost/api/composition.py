"""The shared objects of one app (database, catalog, runtime settings, coordinator) and how they are built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from modelhost.catalog.builtin import BUILTIN_MODELS
from modelhost.catalog.envs import EnvManager
from modelhost.catalog.store import Catalog, CodePolicy
from modelhost.config import Settings
from modelhost.coordinator.coordinator import Coordinator
from modelhost.jobs.pipeline import JobDeps
from modelhost.jobs.service import JobService, build_job_service
from modelhost.metrics import Metrics
from modelhost.runtime_settings import RuntimeSettingsStore
from modelhost.speakers.directory import SpeakerDirectory
from modelhost.speakers.vectors import VoiceprintIndex
from modelhost.storage.blobs import build_blob_store
from modelhost.storage.db import build_engine, build_sessionmaker, migrate


@dataclass
class Services:
    """Shared objects of one app, reached by routes through ``modelhost.api.deps``."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    catalog: Catalog
    runtime: RuntimeSettingsStore
    envs: EnvManager
    coordinator: Coordinator
    metrics: Metrics
    speakers: SpeakerDirectory
    jobs: JobService


def build_services(settings: Settings, metrics: Metrics) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = build_engine(settings.resolved_database_url)
    migrate(engine)
    sessions = build_sessionmaker(engine)
    envs = EnvManager(settings.envs_dir)
    policy = CodePolicy(settings.allow_custom_backends, settings.allow_trust_remote_code)
    catalog = Catalog(sessions, envs.exists, policy)
    catalog.register_builtins(BUILTIN_MODELS)
    runtime = RuntimeSettingsStore(sessions)
    runtime.load()
    coordinator = Coordinator(settings, runtime, envs, metrics)
    coordinator.on_measured = catalog.record_memory
    if settings.broker_url:  # a cluster: models this process does not serve are reached through a node
        from modelhost.cluster.router import ClusterRouter

        coordinator = cast(Coordinator, ClusterRouter(coordinator, settings))  # same interface, by delegation
    catalog.on_change.append(coordinator.model_changed)
    speakers = SpeakerDirectory(sessions, VoiceprintIndex(settings))
    blobs = build_blob_store(settings.data_dir, settings.storage, settings.broker_url)
    jobs = build_job_service(JobDeps(settings, runtime, catalog, coordinator, blobs, sessions, speakers))
    return Services(settings, engine, sessions, catalog, runtime, envs, coordinator, metrics, speakers, jobs)
