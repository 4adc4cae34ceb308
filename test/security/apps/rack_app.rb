# A Rack app behind Rack::MethodOverride (Rails puts it in every app's middleware stack): it runs
# a POST as the method a `_method` form field names. Debian's ruby-rack and ruby-webrick. Each
# request appends {"method", "path", "body"} to RECORD_FILE and answers the method it ran.
require "json"
require "rack"
require "rack/method_override"
require "webrick"
require "rack/handler/webrick"

record = ENV.fetch("RECORD_FILE")
app = Rack::Builder.new do
  use Rack::MethodOverride
  run lambda { |env|
    body = env["rack.input"].read.to_s
    File.open(record, "a") { |f| f.puts JSON.generate({ method: env["REQUEST_METHOD"], path: env["PATH_INFO"], body: body.bytesize }) }
    [200, { "content-type" => "text/plain", "x-app" => "rack" }, [env["REQUEST_METHOD"]]]
  }
end
server = WEBrick::HTTPServer.new(Port: 0, BindAddress: "127.0.0.1", Logger: WEBrick::Log.new(File::NULL, 0), AccessLog: [])
server.mount "/", Rack::Handler::WEBrick, app
$stdout.puts "PORT #{server.listeners[0].addr[1]}"
$stdout.flush
trap("TERM") { server.shutdown }
server.start
