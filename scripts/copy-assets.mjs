// tsc compiles only TypeScript; copy the files the compiled package reads at run time.
import { cpSync } from "node:fs";

cpSync(new URL("../src/dashboard/static/", import.meta.url), new URL("../dist/dashboard/static/", import.meta.url), { recursive: true });
