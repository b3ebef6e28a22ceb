// check.mjs: offline checks of a rendered kustomize overlay (tests/integration/test_kube.c runs
// it from build/kube-check, where it installs package.json's pinned packages with npm).
//
//   node check.mjs schema RENDERED.yaml          every object against the Kubernetes API schemas
//   node check.mjs rules RENDERED.yaml OPTS.json the project's own rules for a bulkhead deployment
//
// schema: each object is validated by kubernetes-models (npm), the API's OpenAPI schemas
// compiled for one Kubernetes release (types, formats, required fields, enums), and then walked
// field by field against the models' type declarations, since those schemas allow unknown
// fields while the API server refuses them (kubectl's --validate=strict): a misspelt key
// (livenesProbe) is an error here. A kind this file cannot name is an error too.
// rules: probes, preStop and grace period, numeric non-root user, read-only root, no
// capabilities, RuntimeDefault seccomp, CPU limit against the event threads, PDB, HPA,
// Services, NetworkPolicy, scrape settings and the connection budget; see rules() below.
//
// Prints "FAIL: <what>" for each problem and "# <note>" for what it checked; exits 1 on any
// failure, 2 on a usage or installation error.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.join(here, "node_modules");
let failures = 0;

function fail(msg) {
    failures++;
    console.log(`FAIL: ${msg}`);
}

function note(msg) {
    console.log(`# ${msg}`);
}

function loadObjects(file) {
    const docs = parseAllDocuments(readFileSync(file, "utf8"));
    const objects = [];
    for (const d of docs) {
        if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
        const o = d.toJS();
        // kustomize folds a long base64 value over lines; the API server's decoder skips the
        // line breaks (Go's base64), the schema's "byte" format does not.
        if (o?.kind === "Secret")
            for (const k of Object.keys(o.data || {})) o.data[k] = o.data[k].replace(/\s+/g, "");
        if (o) objects.push(o);
    }
    return objects;
}

const id = (o) => `${o.kind}/${o.metadata?.name}`;

// ---- schema ---------------------------------------------------------------------------------

// The model module of apiVersion/kind, as a path under node_modules (without extension).
function modelPath(o) {
    const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
    if (group === "monitoring.coreos.com")
        return path.join("@kubernetes-models/prometheus-operator", group, version, o.kind);
    return path.join("kubernetes-models", group, version, o.kind);
}

// The main interface of a .d.ts file: its properties, each with the module of its type when
// that type is another interface (an object, or an array of objects), else null (a leaf).
const ifaces = new Map();

function parseIface(dts) {
    if (ifaces.has(dts)) return ifaces.get(dts);
    let result = null;
    if (existsSync(dts)) {
        const text = readFileSync(dts, "utf8");
        const imports = new Map();
        for (const m of text.matchAll(/^import \{ (\w+) \} from "([^"]+)";$/gm)) {
            const spec = m[2];
            const file = spec.startsWith(".")
                ? path.join(path.dirname(dts), spec + ".d.ts")
                : path.join(modules, spec + ".d.ts");
            imports.set(m[1], file);
        }
        const start = text.search(/^export interface I\w+( extends [\w, ]+)? \{$/m);
        if (start >= 0) {
            result = new Map();
            let depth = 0;
            for (const line of text.slice(start).split("\n").slice(1)) {
                if (depth === 0 && line.startsWith("}")) break;
                const m = depth === 0 && line.match(/^ {4}"([^"]+)"\??: (.*)$/);
                if (m) {
                    const arr = m[2].match(/^Array<(\w+)>;$/);
                    const obj = m[2].match(/^(\w+);$/);
                    const ref = arr ? arr[1] : obj ? obj[1] : null;
                    result.set(m[1], ref && imports.has(ref) ? imports.get(ref) : null);
                }
                depth += (line.match(/\{/g) || []).length - (line.match(/\}/g) || []).length;
            }
        }
    }
    ifaces.set(dts, result);
    return result;
}

// Every key of value must be a property of the interface in dts (recursively).
function walk(value, dts, where, out) {
    const props = parseIface(dts);
    if (!props || value === null || typeof value !== "object") return;
    if (Array.isArray(value)) {
        value.forEach((v, i) => walk(v, dts, `${where}[${i}]`, out));
        return;
    }
    for (const [k, v] of Object.entries(value)) {
        if (!props.has(k)) out.push(`${where}.${k}: unknown field`);
        else if (props.get(k)) walk(v, props.get(k), `${where}.${k}`, out);
    }
}

async function schema(file) {
    const objects = loadObjects(file);
    const kinds = new Map();
    for (const o of objects) {
        const rel = modelPath(o);
        const mod = path.join(modules, rel + ".mjs");
        if (!existsSync(mod)) {
            fail(`${id(o)}: no schema for ${o.apiVersion} ${o.kind} (a kind the API does not serve?)`);
            continue;
        }
        const Model = (await import(mod))[o.kind];
        try {
            new Model(o).validate();
        } catch (e) {
            fail(`${id(o)}: ${e.message}`);
        }
        const unknown = [];
        walk(o, path.join(modules, rel + ".d.ts"), id(o), unknown);
        for (const u of unknown) fail(u);
        kinds.set(o.kind, (kinds.get(o.kind) || 0) + 1);
    }
    const summary = [...kinds].map(([k, n]) => `${n} ${k}`).join(", ");
    note(`${objects.length} objects validated (${summary})`);
}

// ---- rules ----------------------------------------------------------------------------------

// A CPU quantity in millicores ("2", "1500m", "0.5"), or NaN.
function millicores(q) {
    if (q === undefined) return NaN;
    const s = String(q);
    if (/^\d+m$/.test(s)) return Number(s.slice(0, -1));
    if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
    return NaN;
}

// Whether every label of selector is on labels.
const selects = (selector, labels) =>
    !!selector && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

function rules(file, opts) {
    const objects = loadObjects(file);
    const find = (kind, name) => objects.find((o) => o.kind === kind && o.metadata?.name === name);
    const byKind = (kind) => objects.filter((o) => o.kind === kind);

    const dep = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "bulkhead");
    if (!dep) {
        fail("no Deployment named bulkhead");
        return;
    }
    const pod = dep.spec.template.spec;
    const podLabels = dep.spec.template.metadata?.labels || {};
    const c = pod.containers.find((x) => x.name === "bulkhead");
    if (!c) {
        fail("the Deployment has no container named bulkhead");
        return;
    }
    if (!selects(dep.spec.selector.matchLabels, podLabels))
        fail("the Deployment's selector does not select its own pods");

    // The settings: ConfigMaps and Secrets of envFrom, then env; defaults from `bulkhead config`.
    const given = {};
    for (const ef of c.envFrom || []) {
        if (ef.configMapRef) {
            const cm = find("ConfigMap", ef.configMapRef.name);
            if (!cm) fail(`envFrom names ConfigMap ${ef.configMapRef.name}, which is not rendered`);
            else Object.assign(given, cm.data);
        }
        if (ef.secretRef) {
            const s = find("Secret", ef.secretRef.name);
            if (s) {
                for (const [k, v] of Object.entries(s.data || {}))
                    given[k] = Buffer.from(v, "base64").toString();
                Object.assign(given, s.stringData);
            } else if (!(opts.externalSecrets || []).includes(ef.secretRef.name)) {
                fail(`envFrom names Secret ${ef.secretRef.name}, which is neither rendered nor documented as yours`);
            } else {
                note(`Secret ${ef.secretRef.name} is yours to create (not in the overlay)`);
            }
        }
    }
    for (const e of c.env || []) if (e.value !== undefined) given[e.name] = e.value;
    const settings = { ...opts.defaults, ...given };
    for (const k of Object.keys(given))
        if (!(k in opts.defaults)) fail(`setting ${k} is not one \`bulkhead config\` knows`);
    const int = (k) => Number(settings[k]);

    // Probes: startup and liveness on /livez, readiness on /readyz, on the public port.
    const ports = new Map((c.ports || []).map((p) => [p.name, p.containerPort]));
    const probePort = (p) => (typeof p === "string" ? ports.get(p) : p);
    for (const [kind, want] of [["startupProbe", "/livez"], ["livenessProbe", "/livez"], ["readinessProbe", "/readyz"]]) {
        const p = c[kind];
        if (!p?.httpGet) fail(`${kind} is not set (an HTTP GET of ${want})`);
        else if (p.httpGet.path !== want) fail(`${kind} asks ${p.httpGet.path}, not ${want}`);
        else if (probePort(p.httpGet.port) !== int("API_PORT"))
            fail(`${kind} asks port ${p.httpGet.port}, not API_PORT ${int("API_PORT")} (the listener that carries the traffic)`);
    }
    // preStop pause, and a grace period past it plus SHUTDOWN_TIMEOUT_MS.
    const cmd = c.lifecycle?.preStop?.exec?.command || [];
    const pause = c.lifecycle?.preStop?.sleep?.seconds ?? (cmd[0] === "sleep" ? Number(cmd[1]) : NaN);
    if (!(pause > 0)) fail("no preStop pause (exec sleep N, or sleep.seconds): endpoint removal is asynchronous");
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    const drain = int("SHUTDOWN_TIMEOUT_MS") / 1000;
    if (!(grace > pause + drain))
        fail(`terminationGracePeriodSeconds ${grace} is not longer than the preStop pause ${pause} s plus SHUTDOWN_TIMEOUT_MS ${drain} s`);
    else note(`grace period ${grace} s > preStop ${pause} s + drain ${drain} s`);

    // Who runs it: the image's numeric user, non-root, nothing more than it needs.
    const psc = pod.securityContext || {}, csc = c.securityContext || {};
    const user = csc.runAsUser ?? psc.runAsUser;
    if ((csc.runAsNonRoot ?? psc.runAsNonRoot) !== true) fail("runAsNonRoot is not true");
    if (!Number.isInteger(user) || user <= 0) fail(`runAsUser is not a numeric non-root user (${user})`);
    else if (user !== opts.imageUser) fail(`runAsUser ${user} is not the image's user ${opts.imageUser} (Dockerfile)`);
    if (csc.readOnlyRootFilesystem !== true) fail("readOnlyRootFilesystem is not true");
    if (csc.allowPrivilegeEscalation !== false) fail("allowPrivilegeEscalation is not false");
    if (!(csc.capabilities?.drop || []).includes("ALL")) fail("capabilities do not drop ALL");
    if ((csc.capabilities?.add || []).length) fail(`capabilities added: ${csc.capabilities.add}`);
    if ((csc.seccompProfile ?? psc.seccompProfile)?.type !== "RuntimeDefault") fail("seccompProfile is not RuntimeDefault");
    if (pod.automountServiceAccountToken !== false) fail("the service account token is mounted (the server never calls the API)");
    if (pod.enableServiceLinks !== false) fail("enableServiceLinks is not false (a Service named ops would set OPS_PORT=tcp://...)");

    // CPU: HTTP_THREADS=0 starts one event thread per CPU of the limit, rounded up; a fraction
    // would leave a thread throttled. An explicit HTTP_THREADS must be that many.
    const limit = millicores(c.resources?.limits?.cpu);
    if (!(limit > 0)) fail("no CPU limit: the event threads would follow the node's CPUs");
    else if (limit % 1000) fail(`CPU limit ${c.resources.limits.cpu} is not a whole number of CPUs`);
    else {
        const threads = int("HTTP_THREADS") || limit / 1000;
        if (threads !== limit / 1000)
            fail(`HTTP_THREADS=${threads} but the CPU limit gives ${limit / 1000} event threads`);
        else note(`CPU limit ${limit / 1000}: as many event threads`);
    }
    if (!c.resources?.limits?.memory) fail("no memory limit");

    // The tier file is mounted where TIERS_FILE says; its db_max make the connection budget.
    let tiers = null;
    for (const m of c.volumeMounts || []) {
        const vol = (pod.volumes || []).find((v) => v.name === m.name);
        const cm = vol?.configMap && find("ConfigMap", vol.configMap.name);
        for (const [k, v] of Object.entries(cm?.data || {}))
            if (path.join(m.mountPath, k) === settings.TIERS_FILE) tiers = JSON.parse(v);
    }
    if (settings.TIERS_FILE && !tiers) fail(`TIERS_FILE ${settings.TIERS_FILE} is not a mounted ConfigMap key`);

    // Ports: the public and the operators' one, as the settings say.
    if (ports.get("http") !== int("API_PORT")) fail(`container port http is not API_PORT ${int("API_PORT")}`);
    if (!(int("OPS_PORT") > 0)) fail("OPS_PORT is not set: the operator endpoints would share the public port");
    else if (ports.get("ops") !== int("OPS_PORT")) fail(`container port ops is not OPS_PORT ${int("OPS_PORT")}`);
    const ann = dep.spec.template.metadata?.annotations || {};
    if (ann["prometheus.io/scrape"] !== "true" || Number(ann["prometheus.io/port"]) !== int("OPS_PORT"))
        fail("the pod's prometheus.io annotations do not point at the operators' port");

    // Services: one public, one for operators, each selecting the pods, ports by name.
    const svcs = byKind("Service").filter((s) => selects(s.spec.selector, podLabels));
    const svcFor = (name) => svcs.find((s) => s.spec.ports.some((p) => p.targetPort === name || p.targetPort === ports.get(name)));
    if (!svcFor("http")) fail("no Service sends traffic to the public port");
    const opsSvc = svcFor("ops");
    if (!opsSvc) fail("no Service for the operators' port");
    for (const s of svcs)
        for (const p of s.spec.ports)
            if (typeof p.targetPort === "string" && !ports.has(p.targetPort))
                fail(`${id(s)}: targetPort ${p.targetPort} is no container port`);

    // NetworkPolicy: the operators' port only from a namespace selector.
    const nps = byKind("NetworkPolicy").filter((n) => selects(n.spec.podSelector.matchLabels, podLabels));
    if (!nps.length) fail("no NetworkPolicy selects the pods");
    for (const np of nps)
        for (const rule of np.spec.ingress || []) {
            const opsOpen = !rule.ports || rule.ports.some((p) => p.port === "ops" || p.port === int("OPS_PORT"));
            if (opsOpen && (!rule.from || !rule.from.every((f) => f.namespaceSelector && !f.ipBlock)))
                fail(`${id(np)}: an ingress rule admits the operators' port from anywhere`);
        }

    // Disruptions and scaling: a PDB over the pods that still lets a drain proceed; an HPA.
    const pdbs = byKind("PodDisruptionBudget").filter((p) => selects(p.spec.selector.matchLabels, podLabels));
    const hpa = byKind("HorizontalPodAutoscaler").find((h) => h.spec.scaleTargetRef.kind === "Deployment" && h.spec.scaleTargetRef.name === "bulkhead");
    if (!pdbs.length) fail("no PodDisruptionBudget covers the pods");
    if (!hpa) fail("no HorizontalPodAutoscaler scales the Deployment");
    const replicas = hpa ? hpa.spec.minReplicas ?? 1 : dep.spec.replicas ?? 1;
    const maxReplicas = hpa ? hpa.spec.maxReplicas : replicas;
    for (const p of pdbs) {
        const allowed = p.spec.maxUnavailable !== undefined ? Number(p.spec.maxUnavailable) : replicas - Number(p.spec.minAvailable);
        if (!(allowed >= 1)) fail(`${id(p)} allows no disruption at ${replicas} replicas: a node drain would never finish`);
    }
    if (hpa && dep.spec.replicas !== undefined) fail("the Deployment sets replicas while an HPA owns them (each apply resets them)");

    // Scrape configuration for prometheus-operator, when present.
    for (const sm of byKind("ServiceMonitor"))
        for (const ep of sm.spec.endpoints)
            if (!opsSvc || !selects(sm.spec.selector.matchLabels, opsSvc.metadata.labels) || !opsSvc.spec.ports.some((p) => p.name === ep.port))
                fail(`${id(sm)}: does not select the operators' Service port ${ep.port}`);

    // Connection budget: each replica opens up to 1 + sum(db_max) (+1 admin, +1 apikey).
    const dbMax = Object.values(tiers || opts.builtinTiers).reduce((n, t) => n + (t.db_max ?? 5), 0);
    const per = 1 + dbMax + (settings.ADMIN_TOKEN ? 1 : 0) + (settings.AUTH_MODE === "apikey" ? 1 : 0);
    const pg = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "postgres");
    const mc = pg?.spec.template.spec.containers[0].args?.join(" ").match(/max_connections=(\d+)/);
    if (pg) {
        const allowed = (mc ? Number(mc[1]) : 100) - 3; /* superuser_reserved_connections */
        if (per * maxReplicas > allowed)
            fail(`${maxReplicas} replicas x ${per} connections > ${allowed} the database allows`);
        else note(`connection budget: ${maxReplicas} replicas x ${per} <= ${allowed}`);
    } else {
        const admin = settings.ADMIN_TOKEN ? "" : " (+1 per replica with ADMIN_TOKEN)";
        note(`connection budget: ${maxReplicas} replicas x ${per} = ${maxReplicas * per} connections for your PostgreSQL${admin}`);
    }
    // What the C test hands to `bulkhead config --effective`.
    console.log(`SETTINGS ${JSON.stringify({ given, tiers })}`);
}

const [mode, file, optsFile] = process.argv.slice(2);
try {
    if (mode === "schema" && file) await schema(file);
    else if (mode === "rules" && file && optsFile) rules(file, JSON.parse(readFileSync(optsFile, "utf8")));
    else {
        console.error("usage: node check.mjs schema FILE | rules FILE OPTS.json");
        process.exit(2);
    }
} catch (e) {
    console.error(`check.mjs: ${e.stack || e}`);
    process.exit(2);
}
process.exit(failures ? 1 : 0);
