//! A local AWS API: moto in server mode (PyPI `moto[server]`, in the virtualenv `make test`
//! creates) inside a namespace of the test's own, a fault-injecting proxy in front of it, and
//! `tests/aws/verify.py`, which reads what moto holds with boto3, a client independent of ours.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::netns::Netns;
use crate::process::Process;
use crate::rundir::RunDir;
use crate::wait::wait_until;

/// The virtualenv with moto, boto3 and cfn-lint: `BASTION_VENV`, else `out/venv` of the
/// workspace. Panics, naming what to run, when it is missing.
pub fn venv() -> PathBuf {
    let path = std::env::var_os("BASTION_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../out/venv"));
    assert!(
        path.join("bin/moto_server").is_file(),
        "no moto in {}: run `make test-deps` (it creates the virtualenv with moto[server], boto3 and cfn-lint)",
        path.display()
    );
    path
}

pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// A script of `tests/aws/` (`verify.py`, `fault_proxy.py`, `emf_check.py`).
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("aws").join(name)
}

/// moto on `127.0.0.1:PORT` of a namespace.
pub struct AwsEmulator {
    process: Process,
    pub port: u16,
    ns: String,
}

impl AwsEmulator {
    /// Starts moto (with `envs`, e.g. `INITIAL_NO_AUTH_ACTION_COUNT` for signature checks) and
    /// waits until it answers.
    pub fn start(ns: &Netns, dir: &RunDir, port: u16, envs: &[(&str, &str)]) -> AwsEmulator {
        let moto = venv().join("bin/moto_server");
        // moto's recorder writes to `moto_recording` in its working directory unless told
        // where: the run's own folder, so a test never leaves a file in the checkout.
        let recording = dir.path().join(format!("moto-{port}.recording"));
        let mut envs = envs.to_vec();
        envs.push(("MOTO_RECORDER_FILEPATH", recording.to_str().expect("run folders are UTF-8")));
        let process = ns.spawn(
            &format!("moto on port {port}"),
            &[moto.as_os_str(), "-H".as_ref(), "127.0.0.1".as_ref(), "-p".as_ref(), port.to_string().as_ref()],
            &envs,
            &dir.path().join(format!("moto-{port}.log")),
        );
        let emulator = AwsEmulator { process, port, ns: ns.name().to_string() };
        wait_until("moto to answer", Duration::from_secs(30), || {
            emulator.process.check_running()?;
            emulator.api("GET", "/moto-api/").map(drop)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", emulator.process.log_report()));
        emulator
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn ns(&self) -> Netns {
        Netns::borrowed(&self.ns)
    }

    /// One request to moto's own API (`/moto-api/...`); the body of the answer.
    pub fn api(&self, method: &str, path: &str) -> Result<String, String> {
        let code = "import sys,urllib.request\n\
                    r=urllib.request.Request(sys.argv[1],method=sys.argv[2],data=b'' if sys.argv[2]=='POST' else None)\n\
                    sys.stdout.write(urllib.request.urlopen(r,timeout=10).read().decode())\n";
        let out = self.ns().exec(&[python().to_str().unwrap(), "-c", code, &format!("{}{path}", self.url()), method]);
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(out.to_string())
        }
    }

    pub fn start_recording(&self) {
        self.api("POST", "/moto-api/recorder/reset-recording").unwrap();
        self.api("POST", "/moto-api/recorder/start-recording").unwrap();
    }

    /// Saves what was recorded since `start_recording` to `file` (it can be tens of MB).
    pub fn save_recording(&self, file: &Path) {
        let code = "import sys,urllib.request,shutil\n\
                    shutil.copyfileobj(urllib.request.urlopen(sys.argv[1],timeout=60),open(sys.argv[2],'wb'))\n";
        self.ns().run(&[
            python().to_str().unwrap(),
            "-c",
            code,
            &format!("{}/moto-api/recorder/download-recording", self.url()),
            file.to_str().unwrap(),
        ]);
        self.api("POST", "/moto-api/recorder/stop-recording").unwrap();
    }

    /// `tests/aws/verify.py ARGS...` against this emulator, in `region`; its JSON answer.
    pub fn verify(&self, region: &str, args: &[&str]) -> serde_json::Value {
        let mut argv: Vec<String> = vec![python().display().to_string(), script("verify.py").display().to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut full =
            vec!["env".to_string(), format!("AWS_ENDPOINT_URL={}", self.url()), format!("AWS_REGION={region}")];
        full.extend(argv);
        let out = self.ns().exec(&full);
        assert!(out.success(), "verify.py {args:?}: {out}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("verify.py {args:?}: {e}: {}", out.stdout))
    }

    pub fn log_report(&self) -> String {
        self.process.log_report()
    }
}

/// `tests/aws/fault_proxy.py` on `127.0.0.1:PORT`: every `every`-th request is answered with a
/// throttling or 503 error instead of being forwarded to `upstream`.
pub struct FaultProxy {
    process: Process,
    pub port: u16,
    pub log: PathBuf,
}

impl FaultProxy {
    pub fn start(ns: &Netns, dir: &RunDir, port: u16, upstream: &AwsEmulator, every: u32) -> FaultProxy {
        FaultProxy::start_with(ns, dir, port, upstream, every, None)
    }

    /// Like `start`; while `hang_file` exists, requests get no answer at all.
    pub fn start_with(
        ns: &Netns,
        dir: &RunDir,
        port: u16,
        upstream: &AwsEmulator,
        every: u32,
        hang_file: Option<&Path>,
    ) -> FaultProxy {
        let log = dir.path().join(format!("faults-{port}.jsonl"));
        let mut hang = Vec::new();
        if let Some(file) = hang_file {
            hang = vec!["--hang-file".to_string(), file.display().to_string()];
        }
        let process = ns.spawn(
            "the fault proxy",
            &[
                python().display().to_string(),
                script("fault_proxy.py").display().to_string(),
                "--listen".into(),
                port.to_string(),
                "--upstream".into(),
                upstream.port.to_string(),
                "--every".into(),
                every.to_string(),
                "--log".into(),
                log.display().to_string(),
            ]
            .into_iter()
            .chain(hang)
            .collect::<Vec<String>>(),
            &[],
            &dir.path().join(format!("fault-proxy-{port}.log")),
        );
        let proxy = FaultProxy { process, port, log };
        wait_until("the fault proxy to listen", Duration::from_secs(10), || {
            proxy.process.check_running()?;
            crate::traffic::tcp_connect(ns, std::net::SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.process.log_report()));
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The faults injected so far, as `(kind, service)`.
    pub fn faults(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| (v["fault"].as_str().unwrap_or("").to_string(), v["service"].as_str().unwrap_or("").to_string()))
            .collect()
    }
}
