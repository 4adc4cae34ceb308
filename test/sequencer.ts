import { relative } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

/**
 * The files that take longest start first. Without a cache of earlier runs (a fresh clone: CI)
 * vitest starts the largest files first, and the differential suite's files are small: its
 * files (70–90 s each when their cases ran one at a time, ~25–30 s since they run three at a
 * time, mostly waiting) then ran last, on four workers, and the run waited for them. Here they
 * start early, each beside a long file that keeps the cores busy. Measured on 2026-12-05: see the
 * commit that added this.
 */
const LONG_FIRST: readonly string[] = [
  "test/security/differential-wsgiref.test.ts",
  "test/e2e/sdk-rotation-under-load.test.ts",
  "test/security/differential-http-server.test.ts",
  "test/identity/identity-out-cli.test.ts",
  "test/security/differential-uvicorn.test.ts",
  "test/e2e/readme.test.ts",
  "test/security/differential-gunicorn.test.ts",
  "test/e2e/ca-ha.test.ts",
  "test/security/differential-node-http.test.ts",
  "test/store/sqlite.test.ts",
  "test/security/differential-lighttpd.test.ts",
  "test/store/postgres.test.ts",
  "test/security/differential-node-http2.test.ts",
  "test/security/differential-go-nethttp.test.ts",
  "test/deploy/alerts.test.ts",
  "test/security/flood.test.ts",
  "test/e2e/ca-migrate-store.test.ts",
];

export default class LongFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (file: TestSpecification) => {
      const at = LONG_FIRST.indexOf(relative(file.project.config.root, file.moduleId).split("\\").join("/"));
      return at === -1 ? LONG_FIRST.length : at;
    };
    return sorted.map((file, index) => ({ file, index, rank: rank(file) })).sort((a, b) => a.rank - b.rank || a.index - b.index).map((entry) => entry.file);
  }
}
