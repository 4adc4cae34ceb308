<?php
// Symfony HttpFoundation (Debian's php-symfony-http-foundation) with method override on, as
// Laravel turns it on: Request::getMethod() runs a POST as the method a `_method` field in the
// form body (PHP's $_POST, names registered by PHP itself) or the query names. Served by
// `php -S`; each request appends {"method", "path", "body"} to RECORD_FILE and answers the method.
require "/usr/share/php/Symfony/Component/HttpFoundation/autoload.php";

use Symfony\Component\HttpFoundation\Request;

Request::enableHttpMethodParameterOverride();
$request = Request::createFromGlobals();
$method = $request->getMethod();
file_put_contents(getenv("RECORD_FILE"), json_encode(["method" => $method, "path" => $request->getPathInfo(), "body" => strlen($request->getContent())]) . "\n", FILE_APPEND | LOCK_EX);
header("x-app: symfony");
header("content-type: text/plain");
echo $method;
