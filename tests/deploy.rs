//! Keeps `deploy/` from rotting, since no container runs here: the
//! Kubernetes manifests are parsed as YAML (and rendered with `kubectl
//! kustomize` when kubectl is on PATH); every container's command line is
//! parsed with the binaries' own clap definitions (`fold::cli`); ports,
//! probe ports, flags, volumes, Services and the token's Secret must agree;
//! and the Dockerfile must build and ship both binaries as a non-root user
//! with entry points that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use fold::cli::{Command as Subcommand, CoordinatorCli, WorkerCli};
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k8s_dir() -> PathBuf {
    repo().join("deploy/k8s")
}

fn load(text: &str, what: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"))
}

fn string(yaml: &Yaml) -> Option<String> {
    match yaml {
        Yaml::String(text) => Some(text.clone()),
        Yaml::Integer(number) => Some(number.to_string()),
        _ => None,
    }
}

fn list(yaml: &Yaml) -> &[Yaml] {
    yaml.as_vec().map_or(&[], Vec::as_slice)
}

/// The binaries Cargo.toml declares (`[[bin]]` names).
fn cargo_binaries() -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let mut binaries = BTreeSet::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
            binaries.insert(name.trim_matches('"').to_owned());
        }
    }
    assert!(!binaries.is_empty(), "no [[bin]] in Cargo.toml");
    binaries
}

/// What the Dockerfile's final stage ships: the binaries it copies into
/// /usr/local/bin, its user and its entry point.
struct Image {
    binaries: BTreeSet<String>,
    user: String,
    entrypoint: String,
}

fn check_dockerfile() -> Image {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    // Joined continuation lines, comments dropped.
    let instructions: Vec<String> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, line)| line.starts_with("FROM "))
        .map(|(index, _)| index)
        .collect();
    assert!(stages.len() >= 2, "the Dockerfile is not multi-stage");
    let binaries = cargo_binaries();
    // The build stage copies files that exist and builds every binary.
    let build = &instructions[stages[0]..stages[1]];
    for line in build.iter().filter(|line| line.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &words[..words.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "the Dockerfile copies {source}, which is not in the repository"
            );
        }
    }
    let cargo = build
        .iter()
        .find(|line| line.contains("cargo build"))
        .expect("the build stage runs cargo build");
    for binary in &binaries {
        assert!(
            cargo.contains(&format!("--bin {binary}")),
            "cargo build does not build {binary}: {cargo}"
        );
    }
    // The final stage ships every binary, as a user that is not root.
    let runtime = &instructions[*stages.last().unwrap()..];
    let mut shipped = BTreeSet::new();
    for line in runtime
        .iter()
        .filter(|line| line.starts_with("COPY ") && line.ends_with("/usr/local/bin/"))
    {
        for word in line.split_whitespace() {
            if let Some(name) = word.rsplit('/').next()
                && binaries.contains(name)
            {
                shipped.insert(name.to_owned());
            }
        }
    }
    assert_eq!(shipped, binaries, "the image does not ship every binary");
    let user = runtime
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the final stage sets USER")
        .to_owned();
    assert!(
        !["root", "0", "0:0"].contains(&user.as_str()),
        "the image runs as {user}"
    );
    let entrypoint = runtime
        .iter()
        .find_map(|line| line.strip_prefix("ENTRYPOINT "))
        .expect("the final stage has an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).expect("exec-form ENTRYPOINT");
    Image {
        binaries: shipped,
        user,
        entrypoint: entrypoint[0].clone(),
    }
}

/// A container port by name or number.
fn container_port(container: &Yaml, port: &Yaml) -> Option<i64> {
    list(&container["ports"]).iter().find_map(|entry| {
        let number = entry["containerPort"].as_i64()?;
        let matches = match port {
            Yaml::Integer(wanted) => *wanted == number,
            Yaml::String(name) => entry["name"].as_str() == Some(name),
            _ => false,
        };
        matches.then_some(number)
    })
}

fn named_port(container: &Yaml, name: &str) -> i64 {
    container_port(container, &Yaml::String(name.into()))
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The directory flag `dir` lies on a volume from the claim templates.
fn assert_on_claimed_volume(workload: &Yaml, container: &Yaml, dir: &Path) {
    let claims: BTreeSet<String> = list(&workload["spec"]["volumeClaimTemplates"])
        .iter()
        .filter_map(|claim| claim["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let mounted = list(&container["volumeMounts"]).iter().any(|mount| {
        mount["mountPath"]
            .as_str()
            .is_some_and(|path| dir.starts_with(path))
            && mount["name"]
                .as_str()
                .is_some_and(|name| claims.contains(name))
    });
    assert!(mounted, "{} is not on a claimed volume", dir.display());
}

/// What the manifests say, for the cross-checks between workloads.
#[derive(Default)]
struct Cluster {
    /// Service name -> (selector, ports as (port, targetPort)).
    services: BTreeMap<String, (Yaml, Vec<(i64, Yaml)>)>,
    /// The coordinator's gRPC container port.
    coordinator_grpc: Option<i64>,
    /// The worker's --coordinator URL.
    worker_coordinator: Option<String>,
}

fn check_manifests(docs: &[Yaml], image: &Image, what: &str) {
    let mut cluster = Cluster::default();
    let mut workloads = Vec::new();
    for doc in docs {
        match doc["kind"].as_str() {
            Some("Service") => {
                let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
                let ports = list(&doc["spec"]["ports"])
                    .iter()
                    .map(|port| (port["port"].as_i64().unwrap(), port["targetPort"].clone()))
                    .collect();
                cluster
                    .services
                    .insert(name, (doc["spec"]["selector"].clone(), ports));
            }
            Some("StatefulSet" | "Deployment") => workloads.push(doc),
            Some(_) => {}
            None => panic!("{what}: a document without a kind: {doc:?}"),
        }
    }
    assert_eq!(workloads.len(), 2, "{what}: a coordinator and workers");
    let mut binaries_used = BTreeSet::new();
    for workload in &workloads {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let template = &workload["spec"]["template"];
        let spec = &template["spec"];
        let grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
        assert!(
            grace >= 10,
            "{what}: {name} gets {grace} s to stop; the coordinator's grace alone is 5 s"
        );
        if let Some(service) = workload["spec"]["serviceName"].as_str() {
            assert!(
                cluster.services.contains_key(service),
                "{what}: {name}'s serviceName {service} is not a Service"
            );
        }
        // Every Service selecting this workload targets ports it has.
        let labels = &template["metadata"]["labels"];
        for (service, (selector, ports)) in &cluster.services {
            let selects = selector.as_hash().is_some_and(|pairs| {
                pairs
                    .iter()
                    .all(|(key, value)| &labels[key.as_str().unwrap()] == value)
            });
            if !selects {
                continue;
            }
            for (_, target) in ports {
                let container = &list(&spec["containers"])[0];
                assert!(
                    container_port(container, target).is_some(),
                    "{what}: Service {service} targets port {target:?}, which {name} lacks"
                );
            }
        }
        for container in list(&spec["containers"]) {
            let command: Vec<String> = list(&container["command"])
                .iter()
                .filter_map(string)
                .collect();
            let args: Vec<String> = list(&container["args"]).iter().filter_map(string).collect();
            let program = command
                .first()
                .unwrap_or_else(|| panic!("{what}: {name} names no command"));
            let binary = program.strip_prefix("/usr/local/bin/").unwrap_or_else(|| {
                panic!("{what}: {program} is not where the image puts binaries")
            });
            assert!(
                image.binaries.contains(binary),
                "{what}: {program} is not in the image"
            );
            binaries_used.insert(binary.to_owned());
            // The token comes from a Secret, never from the manifest.
            let token = list(&container["env"])
                .iter()
                .find(|env| env["name"].as_str() == Some("FOLD_TOKEN"))
                .unwrap_or_else(|| panic!("{what}: {name} gets no FOLD_TOKEN"));
            assert!(
                token["value"].is_badvalue()
                    && token["valueFrom"]["secretKeyRef"]["name"]
                        .as_str()
                        .is_some(),
                "{what}: {name}'s FOLD_TOKEN is not from a Secret"
            );
            assert!(
                !args.iter().any(|arg| arg.starts_with("--token")),
                "{what}: a token in {name}'s args"
            );
            let requests = &container["resources"]["requests"];
            assert!(
                !requests["cpu"].is_badvalue() && !requests["memory"].is_badvalue(),
                "{what}: {name} requests no cpu or memory"
            );
            // The token reaches the binary through FOLD_TOKEN: stand in for it.
            let mut line: Vec<String> = command.iter().skip(1).cloned().collect();
            line.insert(0, binary.to_owned());
            line.extend(args.iter().cloned());
            match binary {
                "fold-coordinator" => {
                    line.extend(["--token".into(), "from-the-secret".into()]);
                    check_coordinator(workload, container, &line, &mut cluster, what);
                }
                "fold-worker" => check_worker(workload, container, &line, &mut cluster, what),
                other => panic!("{what}: no check for {other}"),
            }
        }
    }
    assert_eq!(
        binaries_used, image.binaries,
        "{what}: every binary of the image runs somewhere"
    );
    // The workers reach the coordinator through its Service's gRPC port.
    let url = cluster.worker_coordinator.expect("a worker");
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap();
    let (host, port) = authority.rsplit_once(':').unwrap();
    let port: i64 = port.parse().unwrap();
    let (_, ports) = cluster
        .services
        .get(host)
        .unwrap_or_else(|| panic!("{what}: workers dial {host}, which is not a Service"));
    let grpc = cluster.coordinator_grpc.expect("a coordinator");
    assert!(
        ports
            .iter()
            .any(|(service_port, target)| *service_port == port
                && (target == &Yaml::String("grpc".into()) || target == &Yaml::Integer(grpc))),
        "{what}: Service {host} has no port {port} to the coordinator's gRPC port"
    );
}

fn port_of(address: Option<SocketAddr>, flag: &str, what: &str) -> i64 {
    i64::from(
        address
            .unwrap_or_else(|| panic!("{what}: no {flag}"))
            .port(),
    )
}

fn check_coordinator(
    workload: &Yaml,
    container: &Yaml,
    line: &[String],
    cluster: &mut Cluster,
    what: &str,
) {
    let cli = CoordinatorCli::try_parse_from(line)
        .unwrap_or_else(|e| panic!("{what}: {line:?} does not parse:\n{e}"));
    let Subcommand::Serve(serve) = cli.command else {
        panic!("{what}: the coordinator does not `serve`: {line:?}");
    };
    assert_eq!(
        workload["spec"]["replicas"].as_i64(),
        Some(1),
        "{what}: one coordinator"
    );
    assert_eq!(
        workload["kind"].as_str(),
        Some("StatefulSet"),
        "{what}: the coordinator keeps state"
    );
    let grpc = named_port(container, "grpc");
    assert_eq!(i64::from(serve.listen.port()), grpc, "{what}: --listen");
    assert!(
        serve.listen.ip().is_unspecified(),
        "{what}: --listen {} is not reachable from other pods",
        serve.listen
    );
    let health = port_of(serve.health_listen, "--health-listen", what);
    assert_eq!(
        health,
        named_port(container, "health"),
        "{what}: --health-listen"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        let port = &container[probe]["grpc"]["port"];
        assert!(!port.is_badvalue(), "{what}: no gRPC {probe}");
        assert_eq!(
            container_port(container, port),
            Some(health),
            "{what}: the {probe} does not reach --health-listen"
        );
    }
    let metrics = port_of(serve.metrics_listen, "--metrics-listen", what);
    assert_eq!(
        metrics,
        named_port(container, "metrics"),
        "{what}: --metrics-listen"
    );
    assert_on_claimed_volume(workload, container, &serve.state_dir);
    cluster.coordinator_grpc = Some(grpc);
}

fn check_worker(
    workload: &Yaml,
    container: &Yaml,
    line: &[String],
    cluster: &mut Cluster,
    what: &str,
) {
    let cli = WorkerCli::try_parse_from(line)
        .unwrap_or_else(|e| panic!("{what}: {line:?} does not parse:\n{e}"));
    fold::channel::check_url(&cli.coordinator)
        .unwrap_or_else(|e| panic!("{what}: the worker's --coordinator: {e}"));
    let metrics = port_of(cli.metrics_listen, "--metrics-listen", what);
    assert_eq!(
        metrics,
        named_port(container, "metrics"),
        "{what}: --metrics-listen"
    );
    let probe = &container["livenessProbe"]["httpGet"];
    assert_eq!(
        container_port(container, &probe["port"]),
        Some(metrics),
        "{what}: the worker's liveness probe does not reach --metrics-listen"
    );
    assert_eq!(probe["path"].as_str(), Some("/healthz"), "{what}");
    assert_on_claimed_volume(workload, container, &cli.data_dir);
    cluster.worker_coordinator = Some(cli.coordinator);
}

/// The manifests as files: every one listed in the kustomization, and none
/// listed that is missing.
fn manifest_files() -> Vec<Yaml> {
    let kustomization = std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).unwrap();
    let kustomization = &load(&kustomization, "kustomization.yaml")[0];
    let listed: BTreeSet<String> = list(&kustomization["resources"])
        .iter()
        .filter_map(string)
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources");
    let mut docs = Vec::new();
    for name in listed {
        let text = std::fs::read_to_string(k8s_dir().join(&name)).unwrap();
        docs.extend(load(&text, &name));
    }
    docs
}

#[test]
fn the_dockerfile_ships_both_binaries_as_a_non_root_user() {
    let image = check_dockerfile();
    assert!(
        image
            .binaries
            .contains(&image.entrypoint.replace("/usr/local/bin/", ""))
    );
    assert!(image.entrypoint.starts_with("/usr/local/bin/"));
    assert_ne!(image.user, "");
    assert!(
        repo().join(".dockerignore").exists(),
        "no .dockerignore: the build context would carry target/"
    );
}

#[test]
fn the_kubernetes_manifests_agree_with_the_binaries_and_each_other() {
    let image = check_dockerfile();
    check_manifests(&manifest_files(), &image, "deploy/k8s files");
}

#[test]
fn the_kustomize_rendering_agrees_with_the_binaries_when_kubectl_is_there() {
    let image = check_dockerfile();
    let rendered = match Command::new("kubectl")
        .arg("kustomize")
        .arg(k8s_dir())
        .output()
    {
        Ok(output) => output,
        Err(_) => {
            eprintln!("kubectl is not on PATH: the YAML files alone were checked");
            return;
        }
    };
    assert!(
        rendered.status.success(),
        "kubectl kustomize failed:\n{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let docs = load(
        &String::from_utf8_lossy(&rendered.stdout),
        "kustomize output",
    );
    check_manifests(&docs, &image, "kubectl kustomize");
    // kustomize applied the image and the common label.
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("image: fold:latest"), "{text}");
    assert!(text.contains("app.kubernetes.io/part-of: fold"), "{text}");
}
