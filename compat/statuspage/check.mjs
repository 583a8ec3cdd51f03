// Reads every Statuspage v2 endpoint of a Lifeline server with the published
// statuspage.io client, and checks each response against the types that
// client declares in its own dist/interfaces/Result.d.ts. The field lists are
// read from that file, not copied here, so a newer client that expects more
// fails this check.
//
// usage: node check.mjs BASE_URL
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Statuspage } from 'statuspage.io';

const base = process.argv[2];
if (!base) {
  console.error('usage: node check.mjs BASE_URL');
  process.exit(2);
}

// Parse "export interface X extends Y { field: type; }" and
// "export declare enum E { A = "a" }" from the client's declarations.
const require = createRequire(import.meta.url);
const dts = readFileSync(join(dirname(require.resolve('statuspage.io')), 'interfaces', 'Result.d.ts'), 'utf8')
  .replace(/\/\*[\s\S]*?\*\//g, '');
const interfaces = {};
for (const m of dts.matchAll(/export interface (\w+)(?: extends ([\w, ]+))? \{([\s\S]*?)\n\}/g)) {
  const fields = {};
  let depth = 0;
  for (const line of m[3].split('\n')) {
    const f = line.match(/^\s{4}(\w+)\??: (.+?);?$/);
    if (depth === 0 && f) fields[f[1]] = f[2].replace(/[{;]\s*$/, '').trim();
    depth += (line.match(/\{/g) || []).length - (line.match(/\}/g) || []).length;
  }
  interfaces[m[1]] = { fields, parents: m[2] ? m[2].split(',').map(s => s.trim()) : [] };
}
const enums = {};
for (const m of dts.matchAll(/export declare enum (\w+) \{([\s\S]*?)\}/g)) {
  enums[m[1]] = [...m[2].matchAll(/"([^"]+)"/g)].map(x => x[1]);
}
if (!interfaces.Incident || !interfaces.Component || !enums.IncidentStatus) {
  console.error('could not read the client type declarations');
  process.exit(1);
}

const problems = [];
function fieldsOf(name) {
  const i = interfaces[name];
  if (!i) return {};
  return Object.assign({}, ...i.parents.map(fieldsOf), i.fields);
}
function checkType(path, value, type) {
  if (type.endsWith('| null')) {
    if (value === null) return;
    type = type.slice(0, -'| null'.length).trim();
  }
  if (type.endsWith('[]')) {
    if (!Array.isArray(value)) return problems.push(`${path}: want an array, got ${JSON.stringify(value)}`);
    value.forEach((v, i) => checkType(`${path}[${i}]`, v, type.slice(0, -2)));
    return;
  }
  if (enums[type]) {
    if (!enums[type].includes(value)) problems.push(`${path}: ${JSON.stringify(value)} is not one of ${enums[type].join(', ')}`);
    return;
  }
  if (interfaces[type]) return checkObject(path, value, type);
  if (type === 'ScheduledMaintenance') {
    // The client declares Omit<Incident, 'status'> plus the window and a
    // MaintenanceStatus. That is narrower than Statuspage itself, whose
    // maintenances have impact "maintenance" and whose maintenance updates
    // carry maintenance statuses; those two are checked against the wider
    // sets, everything else as declared.
    checkObject(path, value, 'Incident', ['status', 'impact', 'incident_updates']);
    for (const k of ['scheduled_for', 'scheduled_until']) checkType(`${path}.${k}`, value[k], 'string');
    checkType(`${path}.status`, value.status, 'MaintenanceStatus');
    if (![...enums.IncidentImpact, 'maintenance'].includes(value.impact)) problems.push(`${path}.impact: ${JSON.stringify(value.impact)}`);
    if (!Array.isArray(value.incident_updates)) return problems.push(`${path}.incident_updates: want an array`);
    value.incident_updates.forEach((u, i) => {
      checkObject(`${path}.incident_updates[${i}]`, u, 'IncidentUpdate', ['status']);
      if (![...enums.IncidentStatus, ...enums.MaintenanceStatus].includes(u.status)) problems.push(`${path}.incident_updates[${i}].status: ${JSON.stringify(u.status)}`);
    });
    return;
  }
  if (['string', 'number', 'boolean'].includes(type)) {
    if (typeof value !== type) problems.push(`${path}: want ${type}, got ${JSON.stringify(value)}`);
    return;
  }
  if (type.startsWith("'")) {
    if (value !== type.slice(1, -1)) problems.push(`${path}: want ${type}`);
    return;
  }
}
function checkObject(path, value, name, skip = []) {
  if (value === null || typeof value !== 'object') return problems.push(`${path}: want an object (${name})`);
  for (const [k, t] of Object.entries(fieldsOf(name))) {
    if (skip.includes(k)) continue;
    if (!(k in value)) {
      problems.push(`${path}.${k}: missing (${name} declares ${t})`);
      continue;
    }
    if (t.startsWith('{')) continue;
    checkType(`${path}.${k}`, value[k], t);
  }
}
// Page's nested "page" object and Status's nested "status" are inline types.
function checkPage(path, doc) {
  for (const k of ['id', 'name', 'time_zone', 'updated_at', 'url']) checkType(`${path}.page.${k}`, doc?.page?.[k], 'string');
}

const client = new Statuspage('lifeline');
client.setApiUrl(base);
const api = client.api;
const calls = {
  'getSummary': [() => api.getSummary(), ['components:Component[]', 'incidents:Incident[]', 'scheduled_maintenances:ScheduledMaintenance[]', 'status']],
  'getStatus': [() => api.getStatus(), ['status']],
  'getComponents': [() => api.getComponents(), ['components:Component[]']],
  'incidents.getAll': [() => api.incidents.getAll(), ['incidents:Incident[]']],
  'incidents.getUnresolved': [() => api.incidents.getUnresolved(), ['incidents:Incident[]']],
  'scheduledMaintenances.getAll': [() => api.scheduledMaintenances.getAll(), ['scheduled_maintenances:ScheduledMaintenance[]']],
  'scheduledMaintenances.getUpcoming': [() => api.scheduledMaintenances.getUpcoming(), ['scheduled_maintenances:ScheduledMaintenance[]']],
  'scheduledMaintenances.getActive': [() => api.scheduledMaintenances.getActive(), ['scheduled_maintenances:ScheduledMaintenance[]']],
  // The client's three maintenance methods all read upcoming.json; these two
  // endpoints are read through the client's own HTTP instance instead.
  'get scheduled-maintenances.json': [async () => (await client.apiClient.get('/api/v2/scheduled-maintenances.json')).data, ['scheduled_maintenances:ScheduledMaintenance[]']],
  'get scheduled-maintenances/active.json': [async () => (await client.apiClient.get('/api/v2/scheduled-maintenances/active.json')).data, ['scheduled_maintenances:ScheduledMaintenance[]']],
};
const counts = {};
for (const [name, [call, parts]] of Object.entries(calls)) {
  let doc;
  try {
    doc = await call();
  } catch (e) {
    problems.push(`${name}: ${e.message}`);
    continue;
  }
  checkPage(name, doc);
  for (const part of parts) {
    const [key, type] = part.split(':');
    if (key === 'status') {
      checkType(`${name}.status.indicator`, doc?.status?.indicator, 'string');
      checkType(`${name}.status.description`, doc?.status?.description, 'string');
      if (!['none', 'minor', 'major', 'critical'].includes(doc?.status?.indicator)) problems.push(`${name}.status.indicator: ${doc?.status?.indicator}`);
      continue;
    }
    checkType(`${name}.${key}`, doc?.[key], type);
    counts[`${name}.${key}`] = Array.isArray(doc?.[key]) ? doc[key].length : -1;
  }
}
console.log(JSON.stringify({ problems, counts }));
process.exit(problems.length ? 1 : 0);
