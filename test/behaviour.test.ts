import * as legacy from "./fixtures/legacy/legacy.js";
import * as standard from "./fixtures/standard.js";
import { describeBehaviour } from "./suites/behaviour.js";
import { durableFileStoreKind, storeKinds } from "./helpers/stores.js";

for (const kind of storeKinds) {
  for (const adapter of ["node:http", "fetch"] as const) {
    for (const fixture of [standard, legacy]) describeBehaviour(kind, adapter, fixture);
  }
}

// The durable write path (fsync of each record and its directory) behaves the same.
for (const adapter of ["node:http", "fetch"] as const) describeBehaviour(durableFileStoreKind, adapter, standard);
