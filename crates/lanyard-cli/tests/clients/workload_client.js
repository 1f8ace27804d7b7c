// Workload API client on Node's @grpc/grpc-js, the proto loaded at run time
// by @grpc/proto-loader from Lanyard's proto. Run by tests/workload_api.rs.
//
//   node workload_client.js SOCKET PROTO_DIR SPIFFE_ID AUDIENCE
//
// Fetches X.509-SVIDs, bundles and a JWT-SVID, validates the JWT-SVID,
// prints one JSON line; exits 1 with the error otherwise.
'use strict';
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [socket, protoDir, spiffeId, audience] = process.argv.slice(2);
const def = loader.loadSync(path.join(protoDir, 'workload.proto'), {
  includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true,
});
const Api = grpc.loadPackageDefinition(def).SpiffeWorkloadAPI;
const client = new Api(`unix:${socket}`, grpc.credentials.createInsecure());
const md = new grpc.Metadata();
md.set('workload.spiffe.io', 'true');
const deadline = () => ({ deadline: Date.now() + 30000 });

function first(call) {
  return new Promise((resolve, reject) => {
    call.once('data', (m) => { resolve(m); call.cancel(); });
    call.once('error', (e) => { if (e.code !== grpc.status.CANCELLED) reject(e); });
  });
}
function unary(method, req, meta) {
  return new Promise((resolve, reject) => client[method](req, meta, deadline(), (e, r) => (e ? reject(e) : resolve(r))));
}

(async () => {
  const result = { client: `@grpc/grpc-js ${require('@grpc/grpc-js/package.json').version}` };
  const x509 = await first(client.FetchX509SVID({}, md, deadline()));
  result.x509_svids = x509.svids.map((s) => s.spiffe_id);
  if (!result.x509_svids.includes(spiffeId)) throw new Error(`no X.509-SVID for ${spiffeId}`);
  const svid = x509.svids.find((s) => s.spiffe_id === spiffeId);
  if (svid.x509_svid[0] !== 0x30 || svid.x509_svid_key[0] !== 0x30) throw new Error('not DER');
  result.x509_bundles = Object.keys((await first(client.FetchX509Bundles({}, md, deadline()))).bundles).sort();
  const jwks = JSON.parse((await first(client.FetchJWTBundles({}, md, deadline()))).bundles['spiffe://example.org'].toString());
  result.jwt_bundle_keys = jwks.keys.length;
  const jwt = await unary('FetchJWTSVID', { audience: [audience], spiffe_id: spiffeId }, md);
  result.jwt_spiffe_id = jwt.svids[0].spiffe_id;
  const v = await unary('ValidateJWTSVID', { audience, svid: jwt.svids[0].svid }, md);
  result.validated_spiffe_id = v.spiffe_id;
  try {
    await unary('ValidateJWTSVID', { audience: 'other', svid: jwt.svids[0].svid }, md);
    result.wrong_audience = 'accepted';
  } catch (e) { result.wrong_audience = grpc.status[e.code]; }
  try {
    await unary('FetchJWTSVID', { audience: [audience] }, new grpc.Metadata());
    result.no_header = 'OK';
  } catch (e) { result.no_header = grpc.status[e.code]; }
  console.log(JSON.stringify(result));
  client.close();
})().catch((e) => { console.error(`error: ${e.code} ${e.details || e.message}`); process.exit(1); });
