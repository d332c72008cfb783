// The AWS SDK for JavaScript v3's IMDS clients, run unchanged in a guest against
// http://169.254.169.254 by tests/test_cloud_clients_netns.py. Prints one JSON line.
// MetadataService sends its paths as "//latest/..." (the endpoint's "/" + "/latest/..."),
// so it is the real client for the doubled-slash form.
"use strict";
const { MetadataService } = require("@aws-sdk/ec2-metadata-service");
const { fromInstanceMetadata } = require("@smithy/credential-provider-imds");

const KEYS = [
  "instance-id",
  "ami-id",
  "reservation-id",
  "security-groups",
  "placement/availability-zone",
  "block-device-mapping/root",
];

async function main() {
  const imds = new MetadataService({ httpOptions: { timeout: 3000 }, retries: 0 });
  const out = { token: (await imds.fetchMetadataToken()).length > 0 };
  for (const key of KEYS) {
    out[key] = await imds.request(`/latest/meta-data/${key}`, {});
  }
  out["user-data"] = await imds.request("/latest/user-data", {});
  // No instance profile here: the credential provider must give up at once, with the
  // 404 of iam/security-credentials/, and pass on to the next provider in a chain.
  try {
    await fromInstanceMetadata({ timeout: 3000, maxRetries: 0 })();
    out.credentials = "unexpected credentials";
  } catch (err) {
    out.credentials = { statusCode: err.statusCode, tryNextLink: err.tryNextLink };
  }
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.log(JSON.stringify({ error: String(err) }));
  process.exit(1);
});
