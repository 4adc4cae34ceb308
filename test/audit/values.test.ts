import { describe, expect, it } from "vitest";
import { hasSubstitution, hostsIn, isLoopbackHost, isNotSecretValue, isPlaceholder } from "../../src/audit/values.ts";

describe("values", () => {
  it("tells placeholders from literals", () => {
    for (const value of ["", "  ", "null", "~", "${X}", "${{X}}", "$(X)", "$X", "%X%", "{X}", "{{ .Values.x }}", "<x>", "[aws_access_key]", "***", "...", "xxxx", "YOUR_API_KEY", "yourPassword", "REPLACE_SECRET", "my-secret", "changeme", "example-key"]) {
      expect(isPlaceholder(value), value).toBe(true);
    }
    for (const value of ["hunter2", "mysecretpassword", "KeFg23!", "dapr-kafka-secret", "9p2dKraexj5RzN7kHV9S9H2EAj7RSI9o", "${X}abc${Y", "s3cr3t-Passw0rd"]) {
      expect(isPlaceholder(value), value).toBe(false);
    }
  });

  it("finds substitutions inside a value", () => {
    expect(hasSubstitution("Bearer ${TOKEN}")).toBe(true);
    expect(hasSubstitution("host=${{PGHOST}} user=x")).toBe(true);
    expect(hasSubstitution("a {{ .Values.x }} b")).toBe(true);
    expect(hasSubstitution("pa$$word")).toBe(false);
  });

  it("knows values that are not secrets", () => {
    for (const value of ["https://idp.example.org/token", "private.key", "/etc/tls/client.key", "./certs/ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB"]) expect(isNotSecretValue(value), value).toBe(true);
    for (const value of ["postgres://u:p@h/db", "s3cr3t", "abc.def"]) expect(isNotSecretValue(value), value).toBe(false);
  });

  it("reads hosts and loopback", () => {
    expect(hostsIn("http://localhost:9411/api")).toEqual(["localhost:9411"]);
    expect(hostsIn("host=db.svc port=5432 sslmode=require")).toEqual(["db.svc"]);
    expect(hostsIn("root:pw@tcp(127.0.0.1:3306)/x")).toEqual(["127.0.0.1:3306"]);
    expect(hostsIn("kafka-0:9092,kafka-1:9092")).toEqual(["kafka-0:9092", "kafka-1:9092"]);
    for (const host of ["localhost", "localhost:6379", "api.localhost", "127.0.0.1", "127.1.2.3:80", "[::1]:8080", "::1"]) expect(isLoopbackHost(host), host).toBe(true);
    for (const host of ["redis", "0.0.0.0", "10.0.0.1", "localhost.example.org", "128.0.0.1"]) expect(isLoopbackHost(host), host).toBe(false);
  });
});
