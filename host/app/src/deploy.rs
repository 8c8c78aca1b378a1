//! Deploying plugin versions: manifest → digest → operator grants → compile → swap.
//!
//! The same path serves the plugins named in the config at start-up and the admin API's
//! deploys, so a version deployed at run time is checked exactly like one configured before
//! start. The operator's `[[plugin]]` entry is the authority: a manifest can only ask for
//! less (see `PluginSettings::grant`).

use delegate_config::{Config, Grant, Manifest, PluginSettings, PluginSource};
use delegate_runtime::{
    CompiledPlugin, ComponentBytes, Deployment, EgressAccess, ModelAccess, PluginLoadError, PluginRegistry,
    PluginSpec, Runtime,
};
use delegate_server::admin::{DeployFuture, DeployOutcome, DeployRefusal, DeployRequest, PluginAdmin};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Version label of a plugin configured by `component =` without a manifest.
pub const UNVERSIONED: &str = "unversioned";

/// Builds and activates plugin versions for the registry.
pub struct Deployer {
    runtime: Runtime,
    registry: Arc<PluginRegistry>,
    config: Arc<Config>,
    model: Option<Arc<dyn delegate_model::ModelProvider>>,
    gateway: delegate_egress::EgressGateway,
    /// Pulls `oci://` references (config `source` and admin deploys), cache first.
    oci: delegate_oci::RegistryClient,
    /// One deploy at a time, so "the version it replaced" is always exact.
    deploying: tokio::sync::Mutex<()>,
}

impl Deployer {
    pub(crate) fn new(
        runtime: Runtime,
        registry: Arc<PluginRegistry>,
        config: Arc<Config>,
        model: Option<Arc<dyn delegate_model::ModelProvider>>,
        gateway: delegate_egress::EgressGateway,
        oci: delegate_oci::RegistryClient,
    ) -> Self {
        Self { runtime, registry, config, model, gateway, oci, deploying: tokio::sync::Mutex::new(()) }
    }

    /// Pulls `reference` (from the local blob cache if every blob is there and intact).
    async fn pull(
        &self,
        name: &str,
        reference: &delegate_oci::Reference,
    ) -> Result<delegate_oci::PulledPlugin, DeployRefusal> {
        let pulled = self.oci.pull(reference).await.map_err(oci_refusal)?;
        tracing::info!(plugin = %name, %reference, from_cache = pulled.from_cache, "plugin artifact pulled");
        Ok(pulled)
    }

    fn settings(&self, name: &str) -> Result<&PluginSettings, DeployRefusal> {
        self.config
            .plugins
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| DeployRefusal::UnknownPlugin(name.to_owned()))
    }

    fn default_model_id(&self) -> Option<&str> {
        self.config.model.as_ref().map(|m| m.model_id.as_str())
    }

    /// The spec a plugin runs with: the operator's settings, narrowed by a manifest's grant.
    fn spec(&self, settings: &PluginSettings, version: &str, grant: Option<Grant>) -> PluginSpec {
        let (limits, plugin_settings, model_id, policy) = match grant {
            Some(g) => (g.limits, g.settings, g.model_id, g.egress),
            None => (
                settings.limits,
                settings.settings.clone(),
                settings.model_id.clone(),
                settings.egress.clone(),
            ),
        };
        let model =
            self.model.as_ref().zip(model_id.as_deref().or(self.default_model_id())).map(|(provider, id)| {
                ModelAccess {
                    provider: Arc::clone(provider),
                    model_id: id.to_owned(),
                    request_limits: delegate_model::RequestLimits::default(),
                }
            });
        PluginSpec {
            name: settings.name.clone(),
            version: version.to_owned(),
            limits,
            settings: plugin_settings,
            model,
            egress: Some(EgressAccess {
                gateway: self.gateway.clone(),
                policy: Arc::new(policy),
                limits: crate::wiring::egress_limits(&limits),
            }),
        }
    }

    /// Checks a manifest and component against the operator's grants for `name`, without
    /// compiling: everything that can be refused cheaply is refused here.
    fn check(
        &self,
        name: &str,
        manifest: &Manifest,
        component: &ComponentBytes,
    ) -> Result<(PluginSpec, String), DeployRefusal> {
        let settings = self.settings(name)?;
        if manifest.name != name {
            return Err(DeployRefusal::NameMismatch {
                target: name.to_owned(),
                manifest: manifest.name.clone(),
            });
        }
        let actual = component.digest();
        if actual != manifest.digest {
            return Err(DeployRefusal::DigestMismatch { expected: manifest.digest.clone(), actual });
        }
        let grant = settings
            .grant(manifest, self.default_model_id())
            .map_err(|e| DeployRefusal::NotGranted(e.to_string()))?;
        Ok((self.spec(settings, &manifest.version, Some(grant)), actual))
    }

    fn compiled(runtime: &Runtime, component: &ComponentBytes) -> Result<CompiledPlugin, DeployRefusal> {
        runtime.compile_component(component).map_err(|e| match e {
            PluginLoadError::NotAComponent => DeployRefusal::NotAComponent,
            PluginLoadError::Compile(m) => DeployRefusal::Compile(m),
            PluginLoadError::World(m) => DeployRefusal::World(m),
            PluginLoadError::Read { path, message } => DeployRefusal::Internal(format!("{path}: {message}")),
        })
    }

    /// Loads the configured version of every plugin that has a source, and activates it.
    /// `embedded` replaces the default plugin's component (the demo's built-in agent).
    pub(crate) async fn load_configured(&self, embedded: Option<&[u8]>) -> Result<(), crate::StartError> {
        for settings in &self.config.plugins {
            let fail = |m: String| crate::StartError::usage(format!("plugin {}: {m}", settings.name));
            let embedded = embedded.filter(|_| settings.default);
            let source = match (&settings.source, embedded) {
                (Some(PluginSource::Oci(reference)), None) => Some(reference.to_string()),
                _ => None,
            };
            let (bytes, spec) = match (&settings.source, embedded) {
                (_, Some(bytes)) => {
                    (ComponentBytes::new(bytes.to_vec()), self.spec(settings, UNVERSIONED, None))
                }
                (None, None) => continue,
                (Some(PluginSource::Component(path)), None) => {
                    (ComponentBytes::new(read(path).map_err(fail)?), self.spec(settings, UNVERSIONED, None))
                }
                (Some(PluginSource::Manifest(path)), None) => {
                    let manifest = Manifest::load(path).map_err(|e| fail(e.to_string()))?;
                    let component = manifest.component.as_deref().ok_or_else(|| {
                        fail(format!("manifest {} names no `component` file", path.display()))
                    })?;
                    let bytes = ComponentBytes::new(read(component).map_err(fail)?);
                    let (spec, _) =
                        self.check(&settings.name, &manifest, &bytes).map_err(|e| fail(e.to_string()))?;
                    (bytes, spec)
                }
                (Some(PluginSource::Oci(reference)), None) => {
                    let pulled =
                        self.pull(&settings.name, reference).await.map_err(|e| fail(e.to_string()))?;
                    let manifest = Manifest::from_toml(&pulled.plugin_manifest, Path::new("."))
                        .map_err(|e| fail(format!("{reference}: plugin.toml: {e}")))?;
                    let bytes = ComponentBytes::new(pulled.component);
                    let (spec, _) =
                        self.check(&settings.name, &manifest, &bytes).map_err(|e| fail(e.to_string()))?;
                    (bytes, spec)
                }
            };
            let compiled = Self::compiled(&self.runtime, &bytes).map_err(|e| fail(e.to_string()))?;
            let compile = compiled.info();
            let plugin = compiled.into_plugin(spec);
            plugin.check_instantiable().await.map_err(|e| fail(format!("cannot be instantiated: {e}")))?;
            self.registry
                .activate(Deployment { plugin, deployed_at: SystemTime::now(), compile, source })
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(())
    }

    async fn deploy_request(
        &self,
        name: &str,
        request: DeployRequest,
        source: Option<String>,
    ) -> Result<DeployOutcome, DeployRefusal> {
        let _one_at_a_time = self.deploying.lock().await;
        let manifest = Manifest::from_toml(&request.manifest, Path::new("."))
            .map_err(|e| DeployRefusal::InvalidManifest(e.to_string()))?;
        let component = ComponentBytes::new(request.component);
        let (spec, digest) = self.check(name, &manifest, &component)?;
        let current = self.registry.snapshot().get(name).and_then(|slot| slot.active.clone());
        if let Some(active) =
            current.filter(|d| d.plugin.digest() == digest && d.plugin.version() == spec.version)
        {
            return Ok(DeployOutcome { active, replaced: None, unchanged: true });
        }
        // Compiling takes a core for up to seconds: keep it off the threads serving requests.
        let runtime = self.runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || Self::compiled(&runtime, &component))
            .await
            .map_err(|e| DeployRefusal::Internal(format!("the compile task failed: {e}")))??;
        let compile = compiled.info();
        let plugin = compiled.into_plugin(spec);
        plugin.check_instantiable().await.map_err(|e| DeployRefusal::NotInstantiable(e.to_string()))?;
        let active = Deployment { plugin, deployed_at: SystemTime::now(), compile, source };
        let replaced = self
            .registry
            .activate(active.clone())
            .map_err(|_| DeployRefusal::UnknownPlugin(name.to_owned()))?;
        Ok(DeployOutcome { active, replaced, unchanged: false })
    }
}

impl PluginAdmin for Deployer {
    fn deploy<'a>(&'a self, name: &'a str, request: DeployRequest) -> DeployFuture<'a> {
        Box::pin(self.deploy_request(name, request, None))
    }

    fn deploy_reference<'a>(&'a self, name: &'a str, reference: &'a str) -> DeployFuture<'a> {
        Box::pin(async move {
            let reference = delegate_oci::Reference::parse(reference).map_err(oci_refusal)?;
            self.settings(name)?;
            let pulled = self.pull(name, &reference).await?;
            self.deploy_request(
                name,
                DeployRequest { manifest: pulled.plugin_manifest, component: pulled.component },
                Some(reference.to_string()),
            )
            .await
        })
    }
}

/// The admin refusal for a failed pull (every case leaves the active version serving).
#[allow(clippy::needless_pass_by_value)] // by value for `map_err(oci_refusal)`
fn oci_refusal(e: delegate_oci::OciError) -> DeployRefusal {
    use delegate_oci::OciError as E;
    let message = e.to_string();
    match e {
        E::InvalidReference { .. } => DeployRefusal::InvalidReference(message),
        E::NotFound { .. } => DeployRefusal::ArtifactNotFound(message),
        E::Unreachable { .. } | E::Unauthorized { .. } | E::Registry { .. } => {
            DeployRefusal::RegistryUnavailable(message)
        }
        E::DigestMismatch { .. } => DeployRefusal::ArtifactTampered(message),
        E::InvalidArtifact(_) | E::TooLarge { .. } => DeployRefusal::InvalidArtifact(message),
        E::Cache(_) => DeployRefusal::Internal(message),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
